"""Child of tests/test_features.py: run `hyperclip_nb features` with the tiny open_clip of `tiny_open_clip`.

`python _features_child.py CLIP_DIR PAUSE ARGV...` registers the tiny architecture (open_clip's registry is per
process), pauses PAUSE seconds after each shard it writes (so that the test can kill it between two shards), runs
`main(ARGV)` and exits with its code. One thread: the same arithmetic as the test's reference, bit for bit.
"""
import sys, time
import torch
from hyperclip_nb import clip_features as cf
from hyperclip_nb.cli import main

if __name__ == '__main__':
    clip_dir, pause, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    torch.set_num_threads(1)
    cf.tiny_open_clip(clip_dir)
    if pause:
        write = cf.ImageShards.write
        def write_then_pause(self, s, image):
            write(self, s, image); time.sleep(pause)
        cf.ImageShards.write = write_then_pause
    sys.exit(main(argv))
