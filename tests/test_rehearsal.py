"""A rehearsal of the Meta-VQA path, end to end, from the command line: `hyperclip_nb data --dataset metavqa-rehearsal`
writes a folder from split files in the published format (here built from the synthetic VQA v2 fixture of
`02_meta_vqa`, so the test needs no download and no reference folder), then `hyperclip_nb reproduce --dataset metavqa
--config paper --schedule smoke --clip rehearsal-768` trains every stage at the paper's sizes (D = 394,240 on 768-d
features) and scores every row, the N-way K-shot episodes included, through the real Meta-VQA loader."""
import json, math
from hyperclip_nb.cli import main
from hyperclip_nb.core import atomic_write_json
from hyperclip_nb.meta_vqa import build_metavqa_split, tiny_vqa_fixture, fill_templates
from hyperclip_nb.evaluation import METHODS


def test_rehearsal_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('HYPERCLIP_NB_CACHE', str(tmp_path/'cache'))   # every stage is built here, none read from another test
    monkeypatch.setenv('HYPERCLIP_NB_QUIET', '1')
    mtr, mte, _ = build_metavqa_split(tiny_vqa_fixture(tmp_path/'vqa'))
    tasks = mtr | mte                              # 4 tasks in meta_train.json and no meta_test.json: the 70/30 rule splits them
    (tmp_path/'splits').mkdir()
    atomic_write_json(tmp_path/'splits'/'meta_train.json', tasks)
    atomic_write_json(tmp_path/'splits'/'prompt_meta.json', fill_templates(tasks)[0])
    data = tmp_path/'metavqa'
    assert main(['data', '--dataset', 'metavqa-rehearsal', '--splits', str(tmp_path/'splits'), '--out', str(data)]) == 0
    assert json.loads((data/'dataset.json').read_text())['tasks'] == {'meta_train': 3, 'meta_test': 1}
    out = tmp_path/'run'
    code = main(['reproduce', '--dataset', 'metavqa', '--data-root', str(data), '--config', 'paper', '--schedule', 'smoke',
                 '--clip', 'rehearsal-768', '--seeds', '1', '--device', 'cpu', '--out', str(out)])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out/'results.json').read_text())
    assert (res['dataset'], res['config'], res['schedule'], res['n_tasks']) == ('metavqa', 'paper', 'smoke', {'meta_train': 3, 'meta_test': 1})
    assert (res['configs']['clip']['model'], res['configs']['adapter']['hidden'], res['configs']['hnet']['latent']) == ('rehearsal-768', 256, 128)
    assert list(res['methods']) == list(METHODS)                         # every row of the table ...
    for name, r in res['methods'].items():                               # ... scored, a fraction of the test tasks right
        assert 0 <= r['zero_shot_acc'] <= 1, (name, r)
    assert set(res['guidance_sweep']) and res['few_shot'], res.keys()    # the guidance sweep and the episodes too
    for method, by_k in res['few_shot'].items():
        if method.startswith('_'): continue
        for k, v in by_k.items(): assert math.isfinite(v['mean'] if isinstance(v, dict) else v), (method, k, v)
    assert (out/'results.md').is_file() and '| zero_shot_clip |' in capsys.readouterr().out
