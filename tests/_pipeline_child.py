"""Child of tests/test_reliability.py::test_sigkill_*: build the small Meta-Shapes → tiny CLIP → features chain.

`run(cache)` is the target of a forkserver process (the forkserver preloads this module, so each child starts in
milliseconds instead of re-importing torch and open_clip); `python _pipeline_child.py` runs it once with
`$HYPERCLIP_NB_CACHE`.
"""
import os, sys
import torch
from hyperclip_nb import meta_shapes as ms
from hyperclip_nb.clip_features import ClipConfig, metashapes_features
from hyperclip_nb.tiny_clip import ClosedVocabTokenizer, metashapes2_texts

# Small enough that a whole build takes a few seconds on one core, big enough to train for a few dozen steps.
DATA = ms.MetaShapesConfig.tiny().replace(n_tasks=12, n_scenes=300,
                                          families=('colour_of_shape', 'count_shape', 'where_shape', 'size_of_pos'))
CLIP = ClipConfig.tiny().replace(n_scenes=120, image_steps=12, text_steps=12, batch_size=16)

# Warm open_clip's tokenizer once (its first use costs seconds: loading the BPE tables). Imported by the forkserver,
# this happens once, and every forked child inherits the warm process instead of paying it again.
ClosedVocabTokenizer.from_texts(metashapes2_texts()[:50], CLIP.context_length)


def run(cache: str):
    os.environ['HYPERCLIP_NB_CACHE'] = cache   # read by `cache_dir()` at every call
    torch.set_num_threads(1)                    # the same arithmetic in every run: bitwise-equal results
    metashapes_features(DATA, CLIP)


if __name__ == '__main__':
    run(os.environ['HYPERCLIP_NB_CACHE'])
