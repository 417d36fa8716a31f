"""A rehearsal of the Meta-VQA path, end to end, from the command line: `hyperclip_nb data --dataset metavqa-rehearsal`
writes a folder from split files in the published format (here 8 small synthetic tasks, so the test needs no download
and no reference folder), then `hyperclip_nb reproduce --dataset metavqa
--config CONFIG --schedule smoke --clip rehearsal-768` trains every stage and scores every row, the N-way K-shot
episodes included, through the real Meta-VQA loader on 768-d features.

CI runs it twice: with `--config tiny` (about 15 s on 2 cores) and at the paper's sizes (`--config paper`: D = 394,240,
a 101 M-parameter HVAE, T = 1000 MetaDiff; about 2 to 5 minutes on 2 cores, 3.6 GB peak), so that a change that
breaks the real path at the real sizes fails CI."""
import json
import pytest
from hyperclip_nb.cli import main
from hyperclip_nb.core import atomic_write_json
from hyperclip_nb.meta_vqa import fill_templates
from hyperclip_nb.evaluation import METHODS


def _split(n:int=8) -> dict:
    """n tasks in the Meta-VQA JSON format, 3 answers each with 6 support and 2 query images per answer: enough that
    every answer is eligible for MetaDiff's 5-shot episodes and that meta-train keeps a validation task (round(0.1 N) >= 1)."""
    tasks = {}
    for k in range(n):
        answers = [f'red{k}', f'green{k}', f'blue{k}']
        pairs = lambda sub, off, m: [[f'COCO_{sub}_{1000 * k + off + j:012d}', answers[j % 3]] for j in range(m)]
        tasks[f'What color is thing number {k}?'] = {'answers': answers, 'train': pairs('train2014', 0, 18), 'test': pairs('val2014', 500, 6)}
    return tasks


@pytest.mark.parametrize('config,hidden,latent', [('tiny', 16, 8), ('paper', 256, 128)])
def test_rehearsal_end_to_end(tmp_path, monkeypatch, capsys, config, hidden, latent):
    monkeypatch.setenv('HYPERCLIP_NB_CACHE', str(tmp_path/'cache'))   # every stage is built here, none read from another test
    monkeypatch.setenv('HYPERCLIP_NB_QUIET', '1')
    tasks = _split()                               # 8 tasks in meta_train.json and no meta_test.json: the 70/30 rule splits them
    (tmp_path/'splits').mkdir()
    atomic_write_json(tmp_path/'splits'/'meta_train.json', tasks)
    atomic_write_json(tmp_path/'splits'/'prompt_meta.json', fill_templates(tasks)[0])
    data = tmp_path/'metavqa'
    assert main(['data', '--dataset', 'metavqa-rehearsal', '--splits', str(tmp_path/'splits'), '--out', str(data)]) == 0
    assert json.loads((data/'dataset.json').read_text())['tasks'] == {'meta_train': 6, 'meta_test': 2}
    out = tmp_path/'run'
    code = main(['reproduce', '--dataset', 'metavqa', '--data-root', str(data), '--config', config, '--schedule', 'smoke',
                 '--clip', 'rehearsal-768', '--seeds', '1', '--device', 'cpu', '--out', str(out)])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out/'results.json').read_text())
    assert (res['dataset'], res['config'], res['schedule'], res['n_tasks']) == ('metavqa', config, 'smoke', {'meta_train': 6, 'meta_test': 2})
    assert (res['configs']['clip']['model'], res['configs']['adapter']['hidden'], res['configs']['hnet']['latent']) == ('rehearsal-768', hidden, latent)
    assert list(res['methods']) == list(METHODS)                         # every row of the table ...
    for name, r in res['methods'].items():                               # ... scored, a fraction of the test tasks right
        assert 0 <= r['zero_shot_acc'] <= 1, (name, r)
    assert set(res['guidance_sweep']) and res['few_shot'], res.keys()    # the guidance sweep and the episodes too
    for method, r in res['few_shot'].items():                           # every episode method, at every K
        if method.startswith('_'): continue
        ks = [k for k in r if k.endswith('shot')]
        assert ks and all(0 <= r[k] <= 1 for k in ks), (method, r)
    assert (out/'results.md').is_file() and '| zero_shot_clip |' in capsys.readouterr().out
