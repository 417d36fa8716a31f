"""Child of tests/test_resume.py: build the HNet → latents → HVAE → HyperLDM chain of a small tiny-preset `Run`, and,
when asked, send itself SIGKILL (or SIGINT) right after the k-th checkpoint of one stage's build is written.

`run(...)` is the target of a forkserver process (the server preloads this module, so each child starts in milliseconds
and is still a fresh OS process: its own memory, its own file locks, killed without any cleanup)."""
import os, signal, sys
import torch
from _pipeline_child import DATA, CLIP          # the small Meta-Shapes world and tiny CLIP of the SIGKILL suite
from hyperclip_nb import training
from hyperclip_nb.core import current_checkpoint_scope
from hyperclip_nb.configs import stage_configs
from hyperclip_nb.pipeline import Run

# The tiny presets on the small world; HyperLDM trains 300 steps instead of 1000 to keep the test to seconds.
CFGS = stage_configs('tiny') | {'data': DATA, 'clip': CLIP}
CFGS['hyperldm'] = CFGS['hyperldm'].replace(steps=300)
STAGES = ('hnet', 'hvae', 'hyperldm')           # the cache stages of the chain, in build order


def run(cache:str, every:str, log:str, stop_stage:str|None=None, stop_after:int=0, how:str='SIGKILL'):
    """Build the chain into `cache`, checkpointing `every`, with stderr in `log`. With `stop_stage`, send this process
    `how` (SIGKILL or SIGINT) right after checkpoint number `stop_after` of that stage's build is written. Ctrl-C's
    KeyboardInterrupt exits with status 130, as the command line does."""
    os.environ['HYPERCLIP_NB_CACHE'], os.environ['HYPERCLIP_NB_CHECKPOINT_EVERY'] = cache, every
    sys.stderr = open(log, 'a', buffering=1)    # the resume, interrupt and warning lines the test reads
    torch.set_num_threads(1)                    # the same arithmetic in every run: bitwise-equal results
    signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C as in a terminal, whatever the parent (an xdist worker) left
    if stop_stage is not None:
        save, saved = training.save_checkpoint, [0]
        def save_then_signal(path, state):
            save(path, state)
            if current_checkpoint_scope().stage == stop_stage:
                saved[0] += 1
                if saved[0] == stop_after: os.kill(os.getpid(), getattr(signal, how))
        training.save_checkpoint = save_then_signal   # the child only: train_loop looks the function up at each save
    r = Run(CFGS, 0, device='cpu')
    try: r.hnet(); r.hvae(); r.hyperldm()
    except KeyboardInterrupt: sys.exit(130)
