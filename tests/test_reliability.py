"""Reliability and security: bad inputs at every boundary, SIGKILL mid-training, racing builders, determinism.

- `test_bad_input` is one table: each case feeds one bad thing (dataset JSON, features, config, checkpoint, path) and
  expects a specific exception whose message names the culprit; afterwards nothing half-written may remain in the
  case's cache or output folder. `test_cli_bad_argument` does the same for the command line: one line, exit 2.
- `test_sigkill_never_corrupts_and_resumes` kills a training chain at >= 10 random points (seeded), checks that every
  artifact in the cache is absent or loadable after each kill, and that the resumed run equals an uninterrupted one.
- `test_concurrent_load_or_build`: 4 processes race for one artifact; it is built once and all read the same bytes.
- Determinism of the whole pipeline (two tiny runs in fresh caches) is checked in `nbs/12c_reproduce.ipynb`,
  so that the suite runs the tiny `reproduce` only twice.
"""
import builtins, dataclasses, hashlib, json, os, pickle, random, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import REPO
from hyperclip_nb.core import (available_devices, cache_digest, ConfigBase, ConfigError, DataError, HyperclipError, get_preset, load_or_build,
                               read_artifact, artifact_dir, save_tensors, load_tensors, atomic_write_json)
from hyperclip_nb.tasks import load_split, load_dataset, load_templates, parse_task, tiny_split_obj
from hyperclip_nb import meta_shapes as ms
from hyperclip_nb.clip_features import ClipConfig, Features, extract_features, load_pretrained_clip
from hyperclip_nb.diffusion import DiffusionConfig
from hyperclip_nb.hypernet import HNet, HNetConfig, save_hnet, load_hnet, Latents
from hyperclip_nb.hyperclip import HyperClip, HyperClipConfig, save_hyperclip, load_hyperclip

TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------------------
# Helpers: what "nothing half-written" means
# ---------------------------------------------------------------------------------------------------------------
def leftovers(folder: Path) -> list[str]:
    "Temporary files or folders (atomic-write temps, interrupted builds, partial downloads) under `folder`."
    if not folder.exists(): return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob('*') if p.name.endswith(('.tmp', '.part')))


def artifact_dirs(cache: Path):
    "(stage, folder) of every visible artifact folder in a cache (hidden entries are in-progress builds)."
    if not cache.exists(): return
    for stage in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith('.')):
        for d in sorted(stage.iterdir()):
            if d.name.startswith('.') or d.name.endswith('.lock'): continue
            yield stage.name, d


def check_artifacts_loadable(cache: Path) -> int:
    "Every visible artifact is complete: config.json readable, every tensor and JSON file loadable. Returns the count."
    n = 0
    for stage, d in artifact_dirs(cache):
        assert d.is_dir(), f'{d}: not a folder'
        read_artifact(d, stage)   # DataError if config.json is missing or corrupt
        for f in d.rglob('*'):
            if f.suffix == '.safetensors': load_tensors(f)
            elif f.suffix == '.json': json.loads(f.read_text())
        if stage == 'features': Features.load(d)
        if stage == 'meta_shapes': load_dataset(d)
        n += 1
    return n


def assert_clean(tmp: Path):
    "No temp files anywhere, and every artifact of the case's cache complete."
    assert not leftovers(tmp), f'half-written files left behind: {leftovers(tmp)}'
    check_artifacts_loadable(tmp/'cache')


# ---------------------------------------------------------------------------------------------------------------
# Fixtures built by the cases
# ---------------------------------------------------------------------------------------------------------------
def write_split(tmp: Path, obj, name='meta_train.json', raw: str | None = None) -> Path:
    p = tmp/name
    p.write_text(raw if raw is not None else json.dumps(obj))
    return p


def split_with(mutate):
    "A split file of `tiny_split_obj` after `mutate(obj)`; returns a case function."
    def case(tmp):
        obj = tiny_split_obj(); mutate(obj)
        load_split(write_split(tmp, obj))
    return case


Q = 'What color is the bowl?'   # the first task of tiny_split_obj: answers ['white', 'red']


def make_dataset(root: Path, drop_image: str | None = None, bad_image: str | None = None) -> Path:
    "A dataset folder: two tasks of tiny_split_obj in meta_train, one in meta_test, templates, 8 px PNG images."
    obj = tiny_split_obj(); qs = list(obj)
    root.mkdir(parents=True, exist_ok=True)
    (root/'meta_train.json').write_text(json.dumps({q: obj[q] for q in qs[:2]}))
    (root/'meta_test.json').write_text(json.dumps({qs[2]: obj[qs[2]]}))
    (root/'prompt_meta.json').write_text(json.dumps({q: 'the answer is {}' for q in qs}))
    (root/'images').mkdir(exist_ok=True)
    ids = {i for t in obj.values() for i, _ in t['train'] + t['test']}
    for n, i in enumerate(sorted(ids)):
        if i == drop_image: continue
        if i == bad_image: (root/'images'/f'{i}.png').write_bytes(b'not a png'); continue
        Image.new('RGB', (8, 8), (n * 20 % 255, 40, 90)).save(root/'images'/f'{i}.png')
    return root


class FakeClip:
    "Stands in for CLIP: image features from pixel means, text features from the token tensor; optional poison."
    def __init__(self, poison=None, d=6): self.poison, self.d = poison, d
    def encode_image(self, x):
        f = x.float().mean((2, 3)).repeat(1, 2)[:, :self.d]
        if self.poison is not None: f[0, 0] = self.poison
        return f
    def encode_text(self, tokens): return tokens.float()


def fake_tokenizer(texts, d=6):
    return torch.tensor([[float(len(t) + j) for j in range(d)] for t in texts])


def saved_features(tmp: Path) -> Path:
    "Features of `make_dataset` under `FakeClip`, saved in tmp/'out'/'feats'."
    ds = load_dataset(make_dataset(tmp/'data'))
    folder = tmp/'out'/'feats'; folder.mkdir(parents=True)
    extract_features(ds, FakeClip(), fake_tokenizer, 8).save(folder)
    return folder


def features_case(mutate):
    def case(tmp):
        folder = saved_features(tmp)
        mutate(folder)
        Features.load(folder)
    return case


def edit_tensors(folder: Path, fn):
    t = load_tensors(folder/'features.safetensors'); fn(t); save_tensors(folder/'features.safetensors', t)


def edit_index(folder: Path, fn):
    idx = json.loads((folder/'index.json').read_text()); fn(idx); atomic_write_json(folder/'index.json', idx)


def hnet_file(tmp: Path, d=6, cfg=None, conditional=False) -> Path:
    p = tmp/'out'/'hnet.safetensors'
    torch.manual_seed(0)
    save_hnet(HNet(d, cfg or HNetConfig.tiny(), conditional), p)
    return p


def truncated(p: Path) -> Path:
    b = p.read_bytes(); p.write_bytes(b[:len(b) // 2]); return p


class Evil:
    "Unpickling this creates a marker file: proof that a loader ran code from a checkpoint."
    marker = None
    def __reduce__(self): return (builtins.open, (str(Evil.marker), 'w'))


def evil_pickle(tmp: Path, name='evil.pt') -> Path:
    Evil.marker = tmp/'PWNED'
    p = tmp/'out'/name; p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(pickle.dumps({'state_dict': Evil(), 'G.0.weight': Evil()}))
    return p


def no_code_ran(tmp: Path):
    assert not (tmp/'PWNED').exists(), 'a loader unpickled the checkpoint and ran its code'


def pickle_to_load_hnet(tmp):
    p = evil_pickle(tmp)
    try: load_hnet(p, 6, HNetConfig.tiny())
    finally: no_code_ran(tmp)


def pickle_to_load_tensors(tmp):
    # The plain `torch.save` of a state dict: the format of almost every checkpoint downloaded from a stranger.
    p = tmp/'out'/'model.pt'; p.parent.mkdir(parents=True)
    torch.save(HNet(6, HNetConfig.tiny()).state_dict(), p)
    load_tensors(p)


def pickle_as_clip(tmp):
    p = evil_pickle(tmp)
    try: load_pretrained_clip('ViT-B-32', str(p))
    finally: no_code_ran(tmp)


def artifact_case(mutate, cfg_for_read=None):
    "Build a small artifact in tmp/'cache', apply `mutate(folder)`, then open it with load_or_build."
    def case(tmp):
        cfg = ms.MetaShapesConfig.tiny()
        def build(c, out): save_tensors(out/'tensors.safetensors', {'x': torch.ones(3)}); return {}
        # tmp/'store', not tmp/'cache': the corrupted artifact is the case's input, not something we left behind
        art = load_or_build('demo', cfg, build, root=tmp/'store')
        mutate(art.path)
        a = load_or_build('demo', cfg, build, root=tmp/'store')
        a.tensors()
    return case


def builder_fails_midway(tmp):
    "A builder that wrote some files and then meets bad data: nothing of it may stay in the cache."
    def build(cfg, out):
        save_tensors(out/'part.safetensors', {'x': torch.ones(2)})
        (out/'scratch.json').write_text('{')
        raise DataError('builder: bad sample 17')
    load_or_build('demo', ms.MetaShapesConfig.tiny(), build, root=tmp/'cache')


def escape_case(stage):
    def case(tmp):
        (tmp/'cache').mkdir()
        try: load_or_build(stage, ms.MetaShapesConfig.tiny(), lambda c, o: (o/'x.json').write_text('{}'), root=tmp/'cache')
        finally:
            outside = [p for p in tmp.rglob('*') if not str(p).startswith(str(tmp/'cache'))]
            assert not outside, f'wrote outside the cache: {outside}'
    return case


def from_json_case(text):
    def case(tmp):
        p = tmp/'cfg.json'; p.write_text(text)
        ms.MetaShapesConfig.from_json(p)
    return case


def latents_other_k(tmp):
    p = tmp/'out'/'latents.safetensors'
    Latents(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 6), torch.zeros(3, 4),
            torch.zeros(1, 4), torch.zeros(4)).save(p)
    Latents.load(p, k=8, d=6)


def hyperclip_file(tmp, n_in=10, d=6):
    p = tmp/'out'/'hyperclip.safetensors'
    save_hyperclip(HyperClip(n_in, d, HyperClipConfig.tiny()), p)
    return p


def download_bad_sha(tmp):
    from hyperclip_nb.meta_vqa import download_split_files
    server = tmp/'server'; server.mkdir(); (server/'a.json').write_bytes(b'{"tampered": true}')
    try: download_split_files(tmp/'out'/'data', {'a.json': ('a.json', hashlib.sha256(b'{}').hexdigest())},
                              base_url=server.as_uri())
    finally: assert not (tmp/'out'/'data'/'a.json').exists(), 'a file that failed its sha256 check was kept'


def download_name_escapes(tmp):
    from hyperclip_nb.meta_vqa import download_split_files
    server = tmp/'server'; server.mkdir(); (server/'a.json').write_bytes(b'{}')
    try: download_split_files(tmp/'out'/'data', {'../escaped.json': ('a.json', hashlib.sha256(b'{}').hexdigest())},
                              base_url=server.as_uri())
    finally: assert not (tmp/'out'/'escaped.json').exists(), 'a download escaped its destination folder'


def extract_with_missing_image(tmp):
    ds = load_dataset(make_dataset(tmp/'data', drop_image='COCO_val2014_000000000010'))
    extract_features(ds, FakeClip(), fake_tokenizer, 8)


def extract_with(poison):
    def case(tmp):
        ds = load_dataset(make_dataset(tmp/'data'))
        extract_features(ds, FakeClip(poison), fake_tokenizer, 8)
    return case


def corrupt_image(tmp):
    ds = load_dataset(make_dataset(tmp/'data', bad_image='COCO_val2014_000000000010'))
    ds.load_image('COCO_val2014_000000000010')


def dataset_case(mutate):
    def case(tmp):
        root = make_dataset(tmp/'data'); mutate(root); load_dataset(root)
    return case


def _set(path, key, value):
    def mutate(obj):
        cur = obj
        for k in path: cur = cur[k]
        cur[key] = value
    return mutate


def _del(path, key):
    def mutate(obj):
        cur = obj
        for k in path: cur = cur[k]
        del cur[key]
    return mutate


DUP_QUESTION = ('{"What is it?": {"answers": ["a", "b"], "train": [["i1", "a"], ["i2", "b"]], "test": [["i3", "a"], ["i4", "b"]]},'
                ' "What is it?": {"answers": ["c", "d"], "train": [["i5", "c"], ["i6", "d"]], "test": [["i7", "c"], ["i8", "d"]]}}')

# id, case(tmp), expected exception, fragment of its message
CASES = [
    # --- dataset JSON ---
    ('json-malformed', lambda t: load_split(write_split(t, None, raw='{"q": {"answers": [')), DataError, 'meta_train.json:1: not valid JSON'),
    ('json-top-level-list', lambda t: load_split(write_split(t, [1, 2])), DataError, 'top level must be an object'),
    ('json-empty-tasks', lambda t: load_split(write_split(t, {})), DataError, 'holds no tasks'),
    ('json-task-not-object', split_with(_set([], Q, ['white', 'red'])), DataError, f"task {Q!r}: expected an object, got list"),
    ('json-missing-key', split_with(_del([Q], 'test')), DataError, "lacks ['test']"),
    ('json-extra-key', split_with(_set([Q], 'answer', [])), DataError, "unexpected key(s) ['answer']"),
    ('json-answers-wrong-type', split_with(_set([Q], 'answers', 'white,red')), DataError, "'answers' must be a list of strings"),
    ('json-answers-not-strings', split_with(_set([Q], 'answers', [1, 2])), DataError, "'answers' must be a list of strings"),
    ('json-one-answer-task', split_with(lambda o: o.__setitem__(Q, {'answers': ['white'], 'train': [['a', 'white']],
                                                                    'test': [['b', 'white']]})), DataError, "has 1 answer(s) ['white']"),
    ('json-duplicate-answers', split_with(_set([Q], 'answers', ['white', 'white'])), DataError, "duplicate answers ['white']"),
    ('json-unknown-answer', split_with(lambda o: o[Q]['train'].append(['COCO_x', 'blue'])), DataError, "answer 'blue' is not in its answers"),
    ('json-empty-train', split_with(_set([Q], 'train', [])), DataError, "'train' is empty"),
    ('json-train-not-list', split_with(_set([Q], 'train', {'a': 'white'})), DataError, "'train' must be a list"),
    ('json-pair-three-items', split_with(lambda o: o[Q]['test'].append(['i', 'red', 'x'])), DataError, "is not an [image_id, answer] pair"),
    ('json-pair-int-id', split_with(lambda o: o[Q]['test'].append([7, 'red'])), DataError, "test[2]=[7, 'red'] is not an [image_id, answer] pair"),
    ('json-duplicate-image-id', split_with(lambda o: o[Q]['train'].append(list(o[Q]['train'][0]))), DataError,
     "image 'COCO_train2014_000000000001' appears twice in 'train'"),
    ('json-duplicate-question-id', lambda t: load_split(write_split(t, None, raw=DUP_QUESTION)), DataError, "duplicate key 'What is it?'"),
    ('json-answer-without-query', split_with(lambda o: o[Q].__setitem__('test', [['COCO_q', 'white']])), DataError,
     "answer(s) ['red'] have no query ('test') pair"),
    ('json-image-id-escapes', split_with(lambda o: o[Q]['train'].__setitem__(0, ['../../secret', 'white'])), DataError,
     "image id '../../secret'"),
    ('json-file-missing', lambda t: load_split(t/'nope.json'), DataError, 'nope.json: split file not found'),
    ('json-path-is-folder', lambda t: load_split(t), DataError, 'is a folder'),
    ('json-template-no-slot', lambda t: load_templates(write_split(t, {Q: 'the bowl is white'}, 'prompt_meta.json')), DataError,
     f"template for {Q!r} is 'the bowl is white'"),
    ('dataset-question-in-both-splits', dataset_case(lambda r: (r/'meta_test.json').write_text(json.dumps(
        {Q: tiny_split_obj()[Q], 'What is the man holding?': tiny_split_obj()['What is the man holding?']}))), DataError,
     'in both meta_train and meta_test'),
    ('dataset-missing-template', dataset_case(lambda r: (r/'prompt_meta.json').write_text(json.dumps({Q: 'the bowl is {}'}))),
     DataError, 'no template for'),
    ('dataset-folder-missing', lambda t: load_dataset(t/'nowhere'), DataError, 'nowhere: dataset folder not found'),
    # --- features ---
    ('features-missing-image', extract_with_missing_image, DataError, "image 'COCO_val2014_000000000010' not found"),
    ('features-corrupt-image', corrupt_image, DataError, 'not a readable image'),
    ('features-nan-from-clip', extract_with(float('nan')), DataError, 'image features of data contain NaN or inf'),
    ('features-inf-from-clip', extract_with(float('inf')), DataError, 'contain NaN or inf'),
    ('features-wrong-dimension', features_case(lambda f: edit_tensors(f, lambda t: t.__setitem__('question', torch.zeros(3, 4)))),
     DataError, 'question features have dimension 4, image features 6'),
    ('features-nan-in-file', features_case(lambda f: edit_tensors(f, lambda t: t['image'].__setitem__((0, 0), float('nan')))),
     DataError, 'image features in'),
    ('features-inf-in-file', features_case(lambda f: edit_tensors(f, lambda t: t['prompt'].__setitem__((1, 1), float('inf')))),
     DataError, 'NaN or inf'),
    ('features-truncated-file', features_case(lambda f: truncated(f/'features.safetensors')), DataError, 'not a readable safetensors file'),
    ('features-index-missing', features_case(lambda f: (f/'index.json').unlink()), DataError, 'index.json: not found'),
    ('features-index-malformed', features_case(lambda f: (f/'index.json').write_text('{"image_ids": [')), DataError, 'index.json'),
    ('features-index-rows-mismatch', features_case(lambda f: edit_index(f, lambda i: i['image_ids'].pop())), DataError,
     'index lists 13 images, the table has 14 rows'),
    ('features-split-tensor-missing', features_case(lambda f: edit_tensors(f, lambda t: t.pop('meta_test.query'))), DataError,
     'meta_test.query'),
    # --- configs ---
    ('config-unknown-key', lambda t: ms.MetaShapesConfig.from_dict({'n_suport': 3}, 'my.json'), ConfigError,
     "my.json: unknown key(s) ['n_suport'] for MetaShapesConfig"),
    ('config-out-of-range', lambda t: ms.MetaShapesConfig(test_frac=1.5), ConfigError, 'MetaShapesConfig.test_frac=1.5: must be in (0, 1)'),
    ('config-negative', lambda t: HNetConfig(lr=-1e-3), ConfigError, 'HNetConfig.lr=-0.001: must be > 0'),
    ('config-wrong-type-str', lambda t: ms.MetaShapesConfig.from_dict({'n_support': '12'}), ConfigError,
     "MetaShapesConfig.n_support='12': expected int, got str"),
    ('config-wrong-type-bool', lambda t: ms.MetaShapesConfig(n_support=True), ConfigError, 'n_support=True: expected int, got bool'),
    ('config-wrong-type-float-for-int', lambda t: ClipConfig.from_dict({'image_steps': 2.5}), ConfigError, 'image_steps=2.5: expected int'),
    ('config-nan', lambda t: ms.MetaShapesConfig(test_frac=float('nan')), ConfigError, 'test_frac=nan'),
    ('config-infinity-in-json', from_json_case('{"p_hard": 0.5, "jitter": Infinity}'), ConfigError, 'jitter=inf'),
    ('config-infinite-lr', lambda t: DiffusionConfig.from_json('{"lr": Infinity}'), ConfigError, 'DiffusionConfig.lr=inf: must be finite'),
    ('config-unknown-family', lambda t: ms.MetaShapesConfig(families=('colour_of_shape', 'colour_of_hat')), ConfigError,
     "unknown family ['colour_of_hat']"),
    ('config-one-task-per-family', lambda t: ms.MetaShapesConfig(world='v1', max_tasks_per_family=1), ConfigError, 'max_tasks_per_family=1'),
    ('config-too-few-objects-to-count', lambda t: ms.MetaShapesConfig(world='v1', families=('count_shape',), n_objects=(1, 2)), ConfigError,
     "n_objects=(1, 2): max must be >= 3"),
    ('config-v2-too-many-tasks', lambda t: ms.MetaShapesConfig(n_tasks=5000), ConfigError,
     'MetaShapesConfig.n_tasks=5000: the 33 families make at most 1811 questions'),
    ('config-v2-one-answer', lambda t: ms.MetaShapesConfig(min_answers=1), ConfigError, 'min_answers=1: must be >= 2'),
    ('config-v2-support-beyond-pool', lambda t: ms.build_meta_shapes(ms.MetaShapesConfig.tiny().replace(n_support=700, n_query=50), t/'w'),
     ConfigError, 'MetaShapesConfig.n_support=700: n_support + n_query = 750 is more than the pool scenes'),
    ('config-clip-recipe-world', lambda t: __import__('hyperclip_nb.tiny_clip', fromlist=['x']).train_tiny_clip(
        ClipConfig.tiny(), ms.MetaShapesConfig.v1()), ConfigError, "recipe='captions' trains on a world='v2'"),
    ('config-n-objects-reversed', lambda t: ms.MetaShapesConfig(n_objects=(3, 2)), ConfigError, 'n_objects=(3, 2)'),
    ('config-not-multiple', lambda t: ClipConfig(image_size=50), ConfigError, 'image_size=50: must be a multiple of patch_size=20'),
    ('config-unknown-choice', lambda t: DiffusionConfig(schedule='cosin'), ConfigError, "schedule='cosin': unknown value"),
    ('config-odd-temb', lambda t: DiffusionConfig(temb=33), ConfigError, 'temb=33: must be even'),
    ('config-json-malformed', from_json_case('{"seed": 1,}'), ConfigError, 'cfg.json:1: not valid JSON'),
    ('config-json-not-object', from_json_case('[1, 2]'), ConfigError, 'expected a JSON object for MetaShapesConfig, got list'),
    ('config-json-duplicate-key', from_json_case('{"seed": 1, "seed": 2}'), ConfigError, "duplicate key 'seed'"),
    ('config-file-missing', lambda t: ms.MetaShapesConfig.from_json(t/'missing.json'), ConfigError, 'missing.json: config file not found'),
    ('config-unknown-preset', lambda t: get_preset(ms.MetaShapesConfig, 'huge'), ConfigError, "unknown preset 'huge'"),
    ('config-replace-unknown', lambda t: HNetConfig().replace(latnet=3), ConfigError, "unknown field(s) ['latnet']"),
    # --- paths from configs ---
    ('path-stage-dotdot', escape_case('..'), ConfigError, "stage '..' is not a valid folder name"),
    ('path-stage-parent', escape_case('../../escaped'), ConfigError, 'is not a valid folder name'),
    ('path-stage-absolute', escape_case('/tmp/escaped'), ConfigError, 'is not a valid folder name'),
    ('path-stage-hidden', escape_case('.hidden'), ConfigError, 'is not a valid folder name'),
    ('path-download-name-escapes', download_name_escapes, ConfigError, "'../escaped.json' is not a plain file name"),
    # --- checkpoints ---
    ('ckpt-truncated', lambda t: load_hnet(truncated(hnet_file(t)), 6, HNetConfig.tiny()), DataError, 'not a readable safetensors file'),
    ('ckpt-empty-file', lambda t: load_hnet((t/'out').mkdir() or (t/'out'/'e.safetensors').write_bytes(b'') or t/'out'/'e.safetensors',
                                            6, HNetConfig.tiny()), DataError, 'not a readable safetensors file'),
    ('ckpt-other-config', lambda t: load_hnet(hnet_file(t), 6, HNetConfig.tiny().replace(latent=4)), DataError,
     'latent size 8 in'),
    ('ckpt-other-hidden', lambda t: load_hnet(hnet_file(t), 6, HNetConfig.tiny().replace(hidden=8)), DataError, 'emits D='),
    ('ckpt-other-feature-dim', lambda t: load_hnet(hnet_file(t, d=6, conditional=True), 8, HNetConfig.tiny(), True), DataError,
     'on d=8 features'),
    ('ckpt-cond-vs-uncond', lambda t: load_hnet(hnet_file(t, conditional=True), 6, HNetConfig.tiny(), False), DataError,
     'holds a conditional (A q) HNet but a unconditional (z0) one'),
    ('ckpt-hyperclip-other-d', lambda t: load_hyperclip(hyperclip_file(t, 10, 6), 10, 8, HyperClipConfig.tiny()), DataError,
     'embeds into d=6 but the features have d=8'),
    ('ckpt-hyperclip-other-input', lambda t: load_hyperclip(hyperclip_file(t, 10, 6), 12, 6, HyperClipConfig.tiny()), DataError,
     'encodes inputs of size 10'),
    ('ckpt-hnet-as-hyperclip', lambda t: load_hyperclip(hnet_file(t), 10, 6, HyperClipConfig.tiny()), DataError,
     'not a HyperCLIP checkpoint'),
    ('ckpt-latents-other-k', latents_other_k, DataError, 'latent size 4 in'),
    ('ckpt-pickle-to-load-hnet', pickle_to_load_hnet, DataError, 'not a readable safetensors file'),
    ('ckpt-torch-save-file', pickle_to_load_tensors, DataError, 'model.pt: not a readable safetensors file'),
    ('ckpt-pickle-as-clip', pickle_as_clip, DataError, 'could not be loaded'),
    ('ckpt-clip-path-missing', lambda t: load_pretrained_clip('ViT-B-32', str(t/'no'/'clip.pt')), DataError, 'clip.pt not found'),
    ('ckpt-download-bad-sha256', download_bad_sha, DataError, 'sha256 mismatch'),
    # --- the artifact cache ---
    ('artifact-config-json-corrupt', artifact_case(lambda d: (d/'config.json').write_text('{"stage": ')), DataError,
     'config.json: corrupt'),
    ('artifact-other-config', artifact_case(lambda d: atomic_write_json(d/'config.json', json.loads((d/'config.json').read_text())
                                                                        | {'config': {'seed': 5}})), DataError, 'built with another MetaShapesConfig'),
    ('artifact-other-stage', artifact_case(lambda d: atomic_write_json(d/'config.json', json.loads((d/'config.json').read_text())
                                                                       | {'stage': 'hnet'})), DataError, "artifact of stage 'hnet', expected 'demo'"),
    ('artifact-file-missing', artifact_case(lambda d: (d/'tensors.safetensors').unlink()), DataError, "missing from artifact 'demo'"),
    ('artifact-tensors-truncated', artifact_case(lambda d: truncated(d/'tensors.safetensors')), DataError, 'not a readable safetensors'),
    ('artifact-builder-fails-midway', builder_fails_midway, DataError, 'builder: bad sample 17'),
]


@pytest.mark.parametrize('case,exc,fragment', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(case, exc, fragment, tmp_path, monkeypatch):
    monkeypatch.setenv('HYPERCLIP_NB_CACHE', str(tmp_path/'cache'))
    with pytest.raises(exc) as info:
        case(tmp_path)
    assert isinstance(info.value, HyperclipError), f'{type(info.value).__name__} is not a HyperclipError'
    assert fragment in str(info.value), f'message {str(info.value)!r} lacks {fragment!r}'
    assert_clean(tmp_path)


def test_bad_input_other_model_as_hnet(tmp_path):
    p = hyperclip_file(tmp_path)
    with pytest.raises(DataError, match=r"hyperclip.safetensors: lacks \['G.0.weight'"):
        load_hnet(p, 6, HNetConfig.tiny())


def test_rebuild_interrupted_leaves_no_half_artifact(tmp_path, monkeypatch):
    "Killed while `rebuild=True` deletes the old artifact: the artifact must be gone or complete, never half-deleted."
    import hyperclip_nb.core as core
    cfg = ms.MetaShapesConfig.tiny()
    def build(c, out):
        for i in range(5): save_tensors(out/f't{i}.safetensors', {'x': torch.full((3,), float(i))})
    art = load_or_build('demo', cfg, build, root=tmp_path)
    real_rmtree = shutil.rmtree
    def dying_rmtree(path, *a, **kw):   # deletes one file of the old artifact, then the process "dies"
        files = sorted(p for p in Path(path).iterdir() if p.suffix == '.safetensors')
        if files: files[0].unlink()
        raise KeyboardInterrupt
    monkeypatch.setattr(core.shutil, 'rmtree', dying_rmtree)
    with pytest.raises(KeyboardInterrupt): load_or_build('demo', cfg, build, root=tmp_path, rebuild=True)
    monkeypatch.setattr(core.shutil, 'rmtree', real_rmtree)
    final = artifact_dir('demo', cfg, tmp_path)
    if (final/'config.json').exists():   # still visible: then it must be complete
        a = read_artifact(final, 'demo', cfg)
        for i in range(5): a.tensors(f't{i}.safetensors')
    art = load_or_build('demo', cfg, build, root=tmp_path)   # and the next run repairs it
    for i in range(5): assert art.tensors(f't{i}.safetensors')['x'][0] == i


# ---------------------------------------------------------------------------------------------------------------
# The command line: one line on stderr, exit 2, nothing written
# ---------------------------------------------------------------------------------------------------------------
def _nonempty(tmp):
    d = tmp/'full'; d.mkdir(); (d/'keep.txt').write_text('mine'); return d


_N_GPUS = torch.cuda.device_count()

CLI_CASES = [
    ('no-command', lambda t: [], 'choose a command'),
    ('unknown-command', lambda t: ['train'], "invalid choice: 'train'"),
    ('unknown-option', lambda t: ['reproduce', '--sedes', '2'], 'unrecognized arguments: --sedes 2'),
    ('seeds-zero', lambda t: ['reproduce', '--seeds', '0'], '--seeds: must be >= 1, got 0'),
    ('seeds-not-int', lambda t: ['reproduce', '--seeds', 'three'], "invalid int value: 'three'"),
    ('unknown-config', lambda t: ['reproduce', '--config', 'huge'], "invalid choice: 'huge'"),
    ('unknown-dataset', lambda t: ['reproduce', '--dataset', 'imagenet'], "invalid choice: 'imagenet'"),
    ('metavqa-without-root', lambda t: ['reproduce', '--dataset', 'metavqa', '--out', str(t/'out')], 'needs --data-root'),
    ('metashapes-with-root', lambda t: ['reproduce', '--data-root', str(t), '--out', str(t/'out')], '--data-root is for --dataset metavqa'),
    ('methods-empty', lambda t: ['reproduce', '--methods', ' , ', '--out', str(t/'out')], '--methods is empty'),
    ('methods-unknown', lambda t: ['reproduce', '--config', 'tiny', '--methods', 'zero_shot_clip,magic', '--out', str(t/'out')],
     "unknown method(s) ['magic']"),
    ('out-is-a-file', lambda t: ['reproduce', '--config', 'tiny', '--out', str(t/'file.txt')], 'is a file'),
    ('data-out-not-empty', lambda t: ['data', '--config', 'tiny', '--out', str(_nonempty(t))], 'exists and is not an empty folder'),
    ('data-out-missing', lambda t: ['data'], 'the following arguments are required: --out'),
    ('data-seed-not-int', lambda t: ['data', '--seed', '1.5', '--out', str(t/'out')], "invalid int value: '1.5'"),
    ('bench-out-is-folder', lambda t: ['bench', '--out', str(t)], 'is a folder; pass a .json file path'),
    ('bench-repeats-negative', lambda t: ['bench', '--repeats', '-1', '--out', str(t/'b.json')], 'must be >= 1, got -1'),
    # a device this machine lacks: one line naming the devices it has, before anything is written
    ('device-unknown', lambda t: ['reproduce', '--config', 'tiny', '--device', 'tpu', '--out', str(t/'out')],
     "device 'tpu' is not a device name; use auto, cpu, cuda, cuda:N or mps (this machine has cpu"),
    ('device-gpu-index-too-high', lambda t: ['reproduce', '--config', 'tiny', '--device', f'cuda:{_N_GPUS + 2}', '--out', str(t/'out')],
     f"device 'cuda:{_N_GPUS + 2}' is not available; this machine has cpu"),
    ('gpu-check-device-missing', lambda t: ['gpu-check', '--device', f'cuda:{_N_GPUS + 2}', '--out', str(t/'gc')],
     f"device 'cuda:{_N_GPUS + 2}' is not available; this machine has cpu"),
    ('gpu-check-seeds-zero', lambda t: ['gpu-check', '--seeds', '0', '--out', str(t/'gc')], '--seeds: must be >= 1, got 0'),
    ('gpu-check-unknown-size', lambda t: ['gpu-check', '--size', 'huge', '--out', str(t/'gc')], "invalid choice: 'huge'"),
    ('bench-device-gpu-index-too-high', lambda t: ['bench', '--device', f'cuda:{_N_GPUS + 2}', '--out', str(t/'b.json')],
     f"device 'cuda:{_N_GPUS + 2}' is not available; this machine has cpu"),
] + ([('device-cuda-without-cuda', lambda t: ['reproduce', '--config', 'tiny', '--device', 'cuda', '--out', str(t/'out')],
       "device 'cuda' is not available; this machine has cpu")] if not _N_GPUS else []) \
  + ([('device-mps-without-mps', lambda t: ['reproduce', '--config', 'tiny', '--device', 'mps', '--out', str(t/'out')],
       "device 'mps' is not available; this machine has cpu")] if 'mps' not in available_devices() else [])


@pytest.mark.parametrize('argv,fragment', [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_argument(argv, fragment, tmp_path, monkeypatch, capsys):
    from hyperclip_nb.cli import main
    monkeypatch.setenv('HYPERCLIP_NB_CACHE', str(tmp_path/'cache'))
    (tmp_path/'file.txt').write_text('not a folder')
    args = argv(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, f'exit {rc}; stderr: {err}'
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('hyperclip_nb: error: '), f'not one error line: {err!r}'
    assert fragment in lines[0], f'{lines[0]!r} lacks {fragment!r}'
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
    assert after == before, f'the failed command wrote {sorted(set(after) - set(before))}'
    assert (tmp_path/'file.txt').read_text() == 'not a folder'


def test_cli_exit_code_in_a_real_process(tmp_path):
    "The console entry point, as a user meets it: exit status 2 and exactly one line on stderr."
    env = os.environ | {'HYPERCLIP_NB_CACHE': str(tmp_path/'cache')}
    r = subprocess.run([sys.executable, '-m', 'hyperclip_nb', 'reproduce', '--seeds', '0'], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == 'hyperclip_nb: error: argument --seeds: must be >= 1, got 0', r.stderr
    assert not (tmp_path/'cache').exists()


# ---------------------------------------------------------------------------------------------------------------
# Interruption: SIGKILL at random points of a training chain
# ---------------------------------------------------------------------------------------------------------------
def forkserver():
    """A multiprocessing context whose server process has imported torch, open_clip and hyperclip_nb once: each child
    is a fresh OS process (killable with SIGKILL, its own file locks) that starts in milliseconds, not seconds."""
    import multiprocessing as mp
    # The server imports the preload modules by name from its own sys.path, which is built from PYTHONPATH.
    paths = os.environ.get('PYTHONPATH', '').split(os.pathsep)
    if str(TESTS) not in paths: os.environ['PYTHONPATH'] = os.pathsep.join([str(TESTS)] + [p for p in paths if p])
    ctx = mp.get_context('forkserver')
    ctx.set_forkserver_preload(['_pipeline_child', '_race_child'])
    p = ctx.Process(target=time.sleep, args=(0,)); p.start(); p.join()   # start the server (and its imports) now
    return ctx


def _run_pipeline(ctx, cache: Path):
    from _pipeline_child import run
    p = ctx.Process(target=run, args=(str(cache),)); p.start(); p.join(300)
    assert p.exitcode == 0, f'pipeline child failed with exit code {p.exitcode}'


def test_sigkill_never_corrupts_and_resumes(tmp_path):
    from _pipeline_child import run
    ctx = forkserver()
    ref = tmp_path/'reference'
    t0 = time.perf_counter(); _run_pipeline(ctx, ref); build_s = time.perf_counter() - t0
    expected = cache_digest(ref)
    assert {k.split('/')[0] for k in expected} == {'meta_shapes', 'tiny_clip', 'features'}
    assert all(Path(k).suffix in ('.safetensors', '.json', '.png') for k in expected), 'an artifact file is neither safetensors, JSON nor PNG'

    cache, rng = tmp_path/'cache', random.Random(20261123)
    kills, completed, attempts, stages_hit = 0, 0, 0, set()
    while kills < 10 and attempts < 40:
        attempts += 1
        p = ctx.Process(target=run, args=(str(cache),)); p.start()
        p.join(rng.uniform(0.0, 0.8 * build_s))   # a random point of the whole chain (the first build's length)
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL); p.join()
        if p.exitcode == -signal.SIGKILL:
            kills += 1
            stages_hit |= {s for s, _ in artifact_dirs(cache)}
            check_artifacts_loadable(cache)   # every visible artifact complete; in-progress builds stay hidden
        else:   # the run finished before its kill point: a resumed run, which must equal the uninterrupted one
            assert p.exitcode == 0, f'pipeline child failed with exit code {p.exitcode}'
            completed += 1
            check_artifacts_loadable(cache)
            assert cache_digest(cache) == expected, 'a resumed run differs from the uninterrupted one'
            # drop the trained stages, keep the rendered dataset: the next run resumes in the middle of the chain
            for stage in ('tiny_clip', 'features'): shutil.rmtree(cache/stage)
    assert kills >= 10, f'only {kills} kills landed in {attempts} attempts'
    _run_pipeline(ctx, cache)   # resume after the last kill
    assert check_artifacts_loadable(cache) == 3
    assert cache_digest(cache) == expected, 'the run resumed after SIGKILL differs from the uninterrupted one'
    print(f'\nSIGKILL: {kills} kill points survived ({completed} runs completed in between), '
          f'artifacts present at kills: {sorted(stages_hit)}')


# ---------------------------------------------------------------------------------------------------------------
# Concurrency: racing builders
# ---------------------------------------------------------------------------------------------------------------
N_RACERS = 4


def test_concurrent_load_or_build(tmp_path):
    from _race_child import race
    ctx = forkserver()
    root, log, go = tmp_path/'cache', tmp_path/'builds.log', tmp_path/'go'
    for rnd in range(2):   # round 0: nobody has it, all race to build; round 1: all load the finished artifact
        outs = [tmp_path/f'racer{rnd}_{i}.json' for i in range(N_RACERS)]
        procs = [ctx.Process(target=race, args=(str(go), str(root), str(log), str(o))) for o in outs]
        for p in procs: p.start()
        time.sleep(0.2); go.touch()
        for p in procs: p.join(120)
        assert [p.exitcode for p in procs] == [0] * N_RACERS
        results = [json.loads(o.read_text()) for o in outs]
        assert len({r['pid'] for r in results}) == N_RACERS, 'the racers were not distinct processes'
        go.unlink()
        builds = log.read_text().split()
        assert len(builds) == 1, f'round {rnd}: the artifact was built {len(builds)} times by {builds}'
        assert len({r['sha256'] for r in results}) == 1, f'racers read different bytes: {results}'
        assert {r['builder'] for r in results} == {int(builds[0])}
        assert not leftovers(root), leftovers(root)
    assert check_artifacts_loadable(root) == 1


