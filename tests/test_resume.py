"""Long trainings resume: a build killed (SIGKILL) in the middle of the HNet, the HVAE or HyperLDM resumes from its
last checkpoint in a fresh process and ends with artifacts byte-identical to an uninterrupted build's, made without
checkpoints; Ctrl-C (SIGINT) saves the step's checkpoint and stops; a checkpoint written by another version is ignored
with a warning and the stage trains from scratch.
The in-process unit tests of the checkpoints (every kind of batches, Ctrl-C, another config) are in
`nbs/00b_training.ipynb`."""
import os, re, shutil, signal, time
from pathlib import Path

from fastcore.test import test_eq as _eq
from hyperclip_nb.core import cache_digest
from hyperclip_nb.training import load_checkpoint, save_checkpoint

TESTS = Path(__file__).resolve().parent
EVERY = '3'     # a checkpoint every 3 steps: HNet 8 steps, HVAE 15, HyperLDM 300


def forkserver():
    "A forkserver context whose server has imported torch, open_clip and hyperclip_nb once (see test_reliability)."
    import multiprocessing as mp
    paths = os.environ.get('PYTHONPATH', '').split(os.pathsep)
    if str(TESTS) not in paths: os.environ['PYTHONPATH'] = os.pathsep.join([str(TESTS)] + [p for p in paths if p])
    ctx = mp.get_context('forkserver')
    ctx.set_forkserver_preload(['_resume_child'])
    return ctx


def child(ctx, cache:Path, log:Path, every:str=EVERY, stop_stage=None, stop_after=0, how='SIGKILL') -> int:
    "Run the chain in a fresh process; its exit code (-9: it killed itself; 130: Ctrl-C)."
    from _resume_child import run
    p = ctx.Process(target=run, args=(str(cache), every, str(log), stop_stage, stop_after, how)); p.start(); p.join(300)
    return p.exitcode


def resumed_at(log:Path, stage:str) -> list[int]:
    "The steps at which the train loop named `stage` resumed, read from a child's log."
    return [int(m) for m in re.findall(rf'^{re.escape(stage)}: resuming at step (\d+)', log.read_text(), re.M)]


def test_interrupted_training_resumes_bit_identical(tmp_path):
    ctx = forkserver()
    ref, cache = tmp_path/'reference', tmp_path/'cache'
    assert child(ctx, ref, tmp_path/'ref.log', every='off') == 0      # uninterrupted, no checkpoints at all
    expected = cache_digest(ref)
    assert {k.split('/')[0] for k in expected} >= {'hnet', 'hnet_latents', 'hvae', 'hyperldm'}
    cache.mkdir()
    for stage in ('meta_shapes', 'tiny_clip', 'features'): shutil.copytree(ref/stage, cache/stage)   # only the chain is retrained

    # Kill in the HNet, then (resuming it) in the HVAE, then (resuming that) in HyperLDM, then finish.
    logs = [tmp_path/f'run{i}.log' for i in range(4)]
    for i, (stage, k) in enumerate((('hnet', 2), ('hvae', 3), ('hyperldm', 40))):
        assert child(ctx, cache, logs[i], stop_stage=stage, stop_after=k) == -signal.SIGKILL
        assert not list((cache/stage).glob('*/config.json')), f'{stage} was completed before its kill'
        assert len(list((cache/stage).glob('.*.checkpoints/loop0.pt'))) == 1, f'no checkpoint of {stage}'
    assert child(ctx, cache, logs[3]) == 0
    _eq(resumed_at(logs[1], 'uncond_hnet_maml'), [6])    # killed after its 2nd checkpoint: step 6 of 8
    _eq(resumed_at(logs[2], 'hvae'), [9])                # 3rd checkpoint: step 9 of 15
    _eq(resumed_at(logs[3], 'diffusion'), [120])         # 40th: step 120 of 300
    assert cache_digest(cache) == expected, 'the resumed build differs from the uninterrupted one'
    assert not list(cache.rglob('.*.checkpoints')), 'checkpoints left behind after the artifacts landed'

    # Ctrl-C in HyperLDM: the checkpoint of that step is on disk and the build stops with KeyboardInterrupt.
    shutil.rmtree(cache/'hyperldm')
    assert child(ctx, cache, tmp_path/'ctrl_c.log', stop_stage='hyperldm', stop_after=10, how='SIGINT') == 130
    ckpt, = (cache/'hyperldm').glob('.*.checkpoints/loop0.pt')
    state = load_checkpoint(ckpt)
    _eq(state['log']['steps'], 30)
    assert f'diffusion: interrupted after step 30; checkpoint saved to {ckpt}' in (tmp_path/'ctrl_c.log').read_text()
    # That checkpoint, as if another version had written it: ignored with a warning naming it; HyperLDM trains from
    # scratch, to the same bytes.
    state['header']['version'] = '0.0.1'; save_checkpoint(ckpt, state)
    assert child(ctx, cache, tmp_path/'stale.log') == 0
    text = (tmp_path/'stale.log').read_text()
    assert f'{ckpt}: ignoring this checkpoint' in text and 'hyperclip_nb 0.0.1' in text, text
    _eq(resumed_at(tmp_path/'stale.log', 'diffusion'), [])
    assert cache_digest(cache) == expected
