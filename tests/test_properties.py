"""Property-based tests (hypothesis): flatten/unflatten, the noise schedules, the Meta-VQA loader and builder, and
the Meta-Shapes builder. Derandomized, so that CI runs the same examples every time."""
import json, math, random, string, tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

from hyperclip_nb.core import ConfigError, DataError
from hyperclip_nb.clip_adapter import adapter_size, hidden_size, flatten, unflatten
from hyperclip_nb.diffusion import SCHEDULES, NoiseSchedule, q_sample, predict_x0, q_posterior, ddim_timesteps
from hyperclip_nb.tasks import parse_task, load_split, write_split, TaskSplit
from hyperclip_nb.meta_vqa import build_metavqa_split, write_metavqa_dataset
from hyperclip_nb import meta_shapes as ms
from hyperclip_nb import meta_shapes_v1 as ms1

FAST = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------------------------
# flatten / unflatten
# ---------------------------------------------------------------------------------------------------------------
@FAST
@given(d=st.integers(1, 9), h=st.integers(1, 9), lead=st.lists(st.integers(1, 3), max_size=2), seed=st.integers(0, 2**31))
def test_flatten_unflatten_roundtrip(d, h, lead, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(*lead, adapter_size(d, h), generator=g)
    parts = unflatten(W, d)
    assert [tuple(p.shape) for p in parts] == [(*lead, h, d), (*lead, d, h), (*lead, h), (*lead, d)]
    assert torch.equal(flatten(*parts), W)
    again = unflatten(flatten(*parts), d)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    assert hidden_size(W.shape[-1], d) == h


@FAST
@given(D=st.integers(0, 400), d=st.integers(1, 9))
def test_hidden_size_accepts_exactly_adapter_sizes(D, d):
    valid = (D - d) > 0 and (D - d) % (2 * d + 1) == 0
    if valid: assert adapter_size(d, hidden_size(D, d)) == D
    else:
        with pytest.raises(DataError, match=f'size {D}'): hidden_size(D, d)


# ---------------------------------------------------------------------------------------------------------------
# the noise schedule
# ---------------------------------------------------------------------------------------------------------------
@FAST
@given(name=st.sampled_from(sorted(SCHEDULES)), T=st.integers(1, 1200))
def test_noise_schedule_invariants(name, T):
    s = NoiseSchedule.from_name(name, T)
    b, ab, abp = s.betas, s.alpha_bar, s.alpha_bar_prev
    assert s.T == T and b.dtype == torch.float64
    for k in ('betas', 'alphas', 'alpha_bar', 'alpha_bar_prev', 'post_var', 'post_coef_x0', 'post_coef_xt'):
        assert torch.isfinite(getattr(s, k)).all(), k
    assert ((b > 0) & (b < 1)).all()
    assert torch.allclose(s.alphas, 1 - b)
    assert ((ab > 0) & (ab < 1)).all() and (ab[1:] < ab[:-1]).all(), 'ᾱ must decrease strictly'
    assert abp[0] == 1 and torch.equal(abp[1:], ab[:-1])
    assert (s.post_var >= 0).all() and (s.post_var <= b + 1e-12).all(), 'posterior variance lies in [0, β_t]'
    assert s.post_var[0] == 0
    # noise-free x_t = sqrt(ᾱ_t) x0 has posterior mean sqrt(ᾱ_{t-1}) x0
    assert torch.allclose(s.post_coef_x0 + s.post_coef_xt * ab.sqrt(), abp.sqrt(), rtol=1e-9, atol=1e-12)
    if name == 'cosine': assert (b <= 0.999).all()


@FAST
@given(name=st.sampled_from(sorted(SCHEDULES)), T=st.integers(1, 400), B=st.integers(1, 5), k=st.integers(1, 6),
       seed=st.integers(0, 2**31))
def test_forward_process_inverts_and_posterior_is_exact_at_x0(name, T, B, k, seed):
    s = NoiseSchedule.from_name(name, T)
    g = torch.Generator().manual_seed(seed)
    x0, noise = torch.randn(B, k, generator=g, dtype=torch.float64), torch.randn(B, k, generator=g, dtype=torch.float64)
    t = torch.randint(0, T, (B,), generator=g)
    xt = q_sample(s, x0, t, noise)
    assert torch.allclose(predict_x0(s, xt, t, noise), x0, atol=1e-6 * max(1.0, float((1 / s.alpha_bar.sqrt()).max())))
    mean, var = q_posterior(s, x0, xt, t)
    assert mean.shape == (B, k) and var.shape == (B, 1) and (var >= 0).all()
    at0 = t == 0   # at t = 0 the posterior is a point mass at x0
    if at0.any(): assert torch.allclose(mean[at0], x0[at0], atol=1e-9)


@FAST
@given(T=st.integers(1, 1000), steps=st.integers(1, 200))
def test_ddim_timesteps(T, steps):
    ts = ddim_timesteps(T, steps)
    assert ts == sorted(set(ts), reverse=True) and len(ts) <= min(T, steps)
    assert ts[-1] == 0 and all(0 <= t < T for t in ts)
    if steps >= 2: assert ts[0] == T - 1


def test_unknown_schedule():
    with pytest.raises(ConfigError, match="unknown schedule 'cosin'"): NoiseSchedule.from_name('cosin', 10)


# ---------------------------------------------------------------------------------------------------------------
# the Meta-VQA loader (split files) and the Meta-VQA builder
# ---------------------------------------------------------------------------------------------------------------
words = st.text(string.ascii_lowercase + ' _', min_size=1, max_size=8).filter(lambda w: w.strip() == w and w)
image_ids = st.builds(lambda s, n: f'COCO_{s}_{n:012d}', st.sampled_from(['train2014', 'val2014']), st.integers(0, 10**12 - 1))


@st.composite
def tasks(draw):
    "A valid task object: 2-5 answers, every answer with >= 1 support and >= 1 query image, distinct images per side."
    answers = draw(st.lists(words, min_size=2, max_size=5, unique=True))
    side = {}
    for key in ('train', 'test'):
        labels = answers + draw(st.lists(st.sampled_from(answers), max_size=6))
        ids = draw(st.lists(image_ids, min_size=len(labels), max_size=len(labels), unique=True))
        ids = draw(st.permutations(ids))
        pairs = [[i, a] for i, a in zip(ids, labels)]
        side[key] = pairs
    return {'answers': answers, 'train': [list(p) for p in side['train']], 'test': [list(p) for p in side['test']]}


splits = st.dictionaries(st.text(string.ascii_letters + ' ?', min_size=1, max_size=20), tasks(), min_size=1, max_size=4)


@FAST
@given(obj=splits)
def test_split_file_roundtrip(obj):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)/'meta_train.json'; p.write_text(json.dumps(obj))
        sp = load_split(p)
        assert sp.questions == list(obj) and [t.to_json_obj() for t in sp] == list(obj.values())
        write_split(sp, Path(d)/'again.json')
        assert json.loads((Path(d)/'again.json').read_text()) == obj
        for t in sp:
            assert {y for _, y in t.support} == set(range(t.n_answers)) == {y for _, y in t.query}


MUTATIONS = {
    'drop key': lambda o, r: o.pop(r.choice(['answers', 'train', 'test'])),
    'extra key': lambda o, r: o.__setitem__('image', 1),
    'one answer': lambda o, r: o.__setitem__('answers', o['answers'][:1]),
    'unknown answer': lambda o, r: o[r.choice(['train', 'test'])].append(['COCO_new', 'zzz unknown']),
    'duplicate image': lambda o, r: o['train'].append(list(o['train'][0])),
    'empty side': lambda o, r: o.__setitem__(r.choice(['train', 'test']), []),
    'bad pair': lambda o, r: o['test'].__setitem__(0, o['test'][0] + ['x']),
    'answer types': lambda o, r: o.__setitem__('answers', [1, 2]),
    'path id': lambda o, r: o['train'].__setitem__(0, ['../' + o['train'][0][0], o['train'][0][1]]),
}


@FAST
@given(obj=tasks(), which=st.sampled_from(sorted(MUTATIONS)), seed=st.integers(0, 1000))
def test_broken_task_raises_data_error(obj, which, seed):
    MUTATIONS[which](obj, random.Random(seed))
    with pytest.raises(DataError, match="task 'q'"): parse_task('q', obj, 'split.json')


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=12)


@FAST
@given(obj=json_values | st.fixed_dictionaries({'answers': json_values, 'train': json_values, 'test': json_values}))
def test_arbitrary_json_task_is_a_task_or_a_data_error(obj):
    "Whatever a hand-edited file holds, the loader answers with a Task or a DataError, never a crash."
    try: parse_task('q', obj)
    except DataError: pass


@st.composite
def vqa_instances(draw):
    "VQA v2 style (question, [(subset, answer, n_images)]) rows."
    qs = draw(st.lists(st.sampled_from(['What color is it?', 'How many dogs?', 'What room is this?', 'Is it a cat or a dog?',
                                        'What sport?', 'Who is there?']), min_size=1, max_size=5, unique=True))
    return [(q, draw(st.sampled_from(['other', 'number', 'yes/no'])),
             draw(st.lists(st.tuples(st.sampled_from(['train2014', 'val2014']), st.sampled_from(['a', 'b', 'c', 'd']),
                                     st.integers(1, 9)), min_size=1, max_size=6))) for q in qs]


def _write_vqa(folder: Path, rows) -> list:
    out, image, qid = [], 1, 1
    for subset in ('train2014', 'val2014'):
        questions, annotations = [], []
        for question, atype, spec in rows:
            for s, ans, n in spec:
                if s != subset: continue
                for _ in range(n):
                    questions.append({'image_id': image, 'question': question, 'question_id': qid})
                    annotations.append({'question_id': qid, 'image_id': image, 'answer_type': atype, 'multiple_choice_answer': ans})
                    image += 1; qid += 1
        qp, ap = folder/f'q_{subset}.json', folder/f'a_{subset}.json'
        qp.write_text(json.dumps({'data_subtype': subset, 'questions': questions}))
        ap.write_text(json.dumps({'data_subtype': subset, 'annotations': annotations}))
        out.append((qp, ap, subset))
    return out


@FAST
@given(rows=vqa_instances(), min_images=st.integers(1, 12), seed=st.integers(0, 3000))
def test_metavqa_builder_output_always_loads(rows, min_images, seed):
    "Every task the Meta-VQA builder keeps is valid for the loader; splits are disjoint; filters hold."
    with tempfile.TemporaryDirectory() as d:
        mtr, mte, counts = build_metavqa_split(_write_vqa(Path(d), rows), seed=seed, min_images=min_images)
        assert not set(mtr) & set(mte) and set(counts) == set(mtr) | set(mte)
        for q, obj in {**mtr, **mte}.items():
            t = parse_task(q, obj, 'built')
            assert 'or' not in q.split() and len(t.support) + len(t.query) > min_images
            assert not {i for i, _ in t.support} & {i for i, _ in t.query}, 'an image is both support and query'
        if mtr and mte:
            templates = {q: 'the answer is {}' for q in counts}
            root = write_metavqa_dataset(Path(d)/'ds', mtr, mte, templates, counts)
            assert load_split(root/'meta_train.json').questions == list(mtr)
        # the same input and seed give the same split
        assert build_metavqa_split(_write_vqa(Path(d), rows), seed=seed, min_images=min_images) == (mtr, mte, counts)


# ---------------------------------------------------------------------------------------------------------------
# the Meta-Shapes builder
# ---------------------------------------------------------------------------------------------------------------
@st.composite
def shapes_configs(draw):
    fams = draw(st.lists(st.sampled_from([f.name for f in ms1.FAMILIES]), min_size=3, max_size=8, unique=True))
    n_ans = max(len(ms1.FAMILY_BY_NAME[f].answers) for f in fams)
    lo = draw(st.integers(1, 3))
    kw = dict(world='v1', families=tuple(fams), n_support=n_ans + draw(st.integers(0, 2)), n_query=n_ans + draw(st.integers(0, 1)),
              image_size=16, max_tasks_per_family=draw(st.sampled_from([1, 3, 4])), seed=draw(st.integers(0, 10**6)),
              n_objects=(lo, draw(st.integers(max(lo, 2), 4))), p_hard=draw(st.floats(0, 1)), test_frac=draw(st.floats(0.1, 0.9)))
    return kw


def test_meta_shapes_builder():
    "Either a ConfigError up front, or a dataset that loads, whose every label is the true answer on its scene."
    built = []

    @SLOW
    @given(kw=shapes_configs())
    def prop(kw):
        try: cfg = ms.MetaShapesConfig(**kw)
        except ConfigError as e:   # rejected up front: one task per family, or too few objects to count to 3
            counting = any(ms1.FAMILY_BY_NAME[f].asks == 'count' for f in kw['families'])
            assert kw['max_tasks_per_family'] == 1 or (counting and kw['n_objects'][1] < 3), e; return
        with tempfile.TemporaryDirectory() as d:
            try: stats = ms.build_meta_shapes(cfg, d)
            except ConfigError as e:   # only when the family choice leaves a split empty
                assert 'need at least one' in str(e); return
            ds = ms.load_dataset(d)
            scenes = ms.load_scenes(ds)
            assert not set(ds.meta_train.questions) & set(ds.meta_test.questions)
            assert stats['meta_train']['tasks'] == len(ds.meta_train) and len(ds.meta_test) >= 1
            ids = ds.image_ids()
            assert len(ids) == sum(len(t.support) + len(t.query) for sp in ds.splits.values() for t in sp), 'image ids are reused'
            for sp in ds.splits.values():
                for t in sp:
                    fam = ms1.FAMILY_BY_NAME[t.family]
                    ref = next(r for r in fam.referents() if fam.question_for(r) == t.question)
                    assert {y for _, y in t.support} == set(range(t.n_answers)) == {y for _, y in t.query}
                    for img, y in t.support + t.query:
                        assert ms.answer(fam, ref, scenes[img]) == t.answers[y]
                        assert kw['n_objects'][0] <= len(scenes[img]) <= kw['n_objects'][1]
            for i in ids[:3]: assert ds.load_image(i).size == (16, 16)
            built.append(len(ids))

    prop()
    assert len(built) >= 4, f'only {len(built)} examples built a dataset; the property tested too little'


@st.composite
def shapes2_configs(draw):
    fams = draw(st.lists(st.sampled_from([f.name for f in ms.FAMILIES]), min_size=2, max_size=6, unique=True))
    return dict(families=tuple(fams), n_tasks=draw(st.integers(2, 24)), n_support=draw(st.integers(2, 30)),
                n_query=draw(st.integers(2, 12)), sizes=draw(st.sampled_from(['fixed', 'vqa'])), image_size=16,
                n_scenes=draw(st.integers(50, 600)), min_per_answer=draw(st.integers(2, 6)),
                n_objects=(draw(st.integers(1, 2)), draw(st.integers(2, 5))), test_frac=draw(st.floats(0.2, 0.5)),
                seed=draw(st.integers(0, 10**6)))


def test_meta_shapes2_builder():
    "Meta-Shapes 2: a ConfigError before anything is written, or a dataset whose labels are the true answers, split compositionally."
    built = []

    @SLOW
    @given(kw=shapes2_configs())
    def prop(kw):
        try: cfg = ms.MetaShapesConfig(**kw)
        except ConfigError: return
        with tempfile.TemporaryDirectory() as d:
            try: stats = ms.build_meta_shapes(cfg, Path(d)/'w')
            except ConfigError as e:
                assert str(e).startswith('MetaShapesConfig.'), e
                assert not (Path(d)/'w').exists(), 'a world that cannot be made wrote files'; return
            ds = ms.load_dataset(Path(d)/'w'); scenes = ms.load_scenes(ds); qi = ms.question_index('v2')
            assert len(ds.meta_train) + len(ds.meta_test) == cfg.n_tasks and len(ds.meta_test) >= 1
            assert ms.split_violations(ds.meta_train, ds.meta_test) == []
            for sp in ds.splits.values():
                for t in sp:
                    fam, ref = qi[t.question]
                    assert fam.name == t.family and fam.name in cfg.families
                    assert not {i for i, _ in t.support} & {i for i, _ in t.query}
                    for img, y in t.support + t.query: assert ms.answer(fam, ref, scenes[img]) == t.answers[y]
            assert stats['images'] == len(ds.image_ids())
            built.append(cfg.n_tasks)

    prop()
    assert len(built) >= 3, f'only {len(built)} examples built a dataset; the property tested too little'


@FAST
@given(family=st.sampled_from(ms1.FAMILIES), data=st.data(), seed=st.integers(0, 10**6))
def test_sample_scene_answers_its_target(family, data, seed):
    ref = data.draw(st.sampled_from(family.referents()))
    target = data.draw(st.sampled_from(family.answers))
    scene = ms1.sample_scene(family, ref, target, random.Random(seed))
    assert ms.answer(family, ref, scene) == target
    assert len({o.pos for o in scene}) == len(scene), 'two objects share a quadrant'


@FAST
@given(kw=shapes_configs())
def test_config_json_roundtrip(kw):
    if kw['max_tasks_per_family'] == 1: kw['max_tasks_per_family'] = 0
    kw['n_objects'] = (kw['n_objects'][0], 4)
    cfg = ms.MetaShapesConfig(**kw)
    again = ms.MetaShapesConfig.from_json(cfg.to_json())
    assert again == cfg and again.key() == cfg.key()

