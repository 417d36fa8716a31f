"""Feature extraction across processes (`hyperclip_nb features`, `03_clip_features`' shards, `11b_pipeline`'s merge).

- `test_sigkill_then_resume`: a child process is SIGKILLed after its first shard lands; the rerun encodes only the
  shards that were missing, and the merged features equal an uninterrupted one-shot extraction, bit for bit.
- `test_two_parts_merge`: two `--shard k/2` processes started together each encode their half; the last to finish
  merges, and the features equal the one-shot extraction, bit for bit.
Both run on a small folder in the Meta-VQA layout (`tiny_metavqa_folder`, 89 images, 6 shards of 16) with a tiny
open_clip of random weights (`tiny_open_clip`), on the CPU with one thread.
"""
import os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from hyperclip_nb import clip_features as cf
from hyperclip_nb.clip_features import ClipConfig, Features, tiny_metavqa_folder, tiny_open_clip, load_clip, extract_features
from hyperclip_nb.meta_vqa import prepare_metavqa
from hyperclip_nb.cli import main

TESTS = Path(__file__).resolve().parent
TABLES = ('image', 'question', 'prompt')


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    "(folder, data root, CLIP config, one-shot features): the reference every test compares with."
    d = tmp_path_factory.mktemp('features')
    root = tiny_metavqa_folder(d/'metavqa')
    name, ckpt = tiny_open_clip(d/'clip')
    clip = ClipConfig(model=name, pretrained=str(ckpt))
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        m, tok, size = load_clip(clip)
        ref = extract_features(prepare_metavqa(root), m, tok, size, batch_size=8)
    finally: torch.set_num_threads(threads)
    return d, root, clip, ref


def argv(root, clip, *more):
    return ['features', '--data-root', str(root), '--clip', clip.model, '--clip-pretrained', clip.pretrained,
            '--device', 'cpu', '--shard-size', '16', '--batch-size', '8', '--workers', '1', *more]


def child(d, cache, args, pause=0.0):
    env = os.environ | {'HYPERCLIP_NB_CACHE': str(cache), 'OMP_NUM_THREADS': '1'}
    return subprocess.Popen([sys.executable, str(TESTS/'_features_child.py'), str(d/'clip'), str(pause), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_same(path, ref):
    f = Features.load(path)
    assert f.image_ids == ref.image_ids
    for k in TABLES: assert torch.equal(getattr(f, k), getattr(ref, k)), k


def test_sigkill_then_resume(world, tmp_path, monkeypatch, capsys):
    d, root, clip, ref = world
    cache = tmp_path/'cache'
    p = child(d, cache, argv(root, clip), pause=3.0)
    t0, shards = time.time(), []
    while not shards:
        assert p.poll() is None, f'the child ended before its first shard: {p.communicate()}'
        assert time.time() - t0 < 180, 'no shard after 180 s'
        shards = sorted(cache.glob('features/.shards/*/shard-*.safetensors')); time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    kept = sorted(int(s.name.split('-')[1]) for s in shards[0].parent.glob('shard-*.safetensors'))
    assert 1 <= len(kept) < 6, kept
    assert not list(cache.glob('features/[!.]*')), 'a features artifact was written before every shard was'
    written, write = [], cf.ImageShards.write
    monkeypatch.setattr(cf.ImageShards, 'write', lambda self, s, image: (written.append(s), write(self, s, image)))
    monkeypatch.setenv('HYPERCLIP_NB_CACHE', str(cache))
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try: code = main(argv(root, clip))
    finally: torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0, out
    assert written == [s for s in range(6) if s not in kept], (written, kept)     # the finished shards were not encoded again
    assert out.startswith(f'part 0/1: encoded {6 - len(kept)} shard(s), found {len(kept)} on disk; features: '), out
    assert_same(out.split('features: ')[1].strip(), ref)
    assert not shards[0].parent.exists(), 'the shards of a merged table are removed'


def test_two_parts_merge(world, tmp_path):
    d, root, clip, ref = world
    cache = tmp_path/'cache'
    procs = [child(d, cache, argv(root, clip, '--shard', f'{k}/2')) for k in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for k, (out, _) in enumerate(outs): assert out.startswith(f'part {k}/2: encoded 3 shard(s), found 0 on disk; '), out
    paths = {o.split('features: ')[1].strip() for o, _ in outs if 'features: ' in o}
    assert len(paths) == 1, outs                    # the last part merged (both report it when they finish together)
    assert_same(paths.pop(), ref)
    assert not list(cache.glob('features/.shards/*/shard-*')), 'the shards of a merged table are removed'
