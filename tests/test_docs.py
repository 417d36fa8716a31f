"""The README and the docs home (`nbs/index.ipynb`) are kept in step by hand (Quarto cannot run here, so
`nbdev_readme` cannot regenerate the README): these tests catch the two drifting apart, and the results table
drifting from the committed `results.json` it reports."""
import json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT/'README.md').read_text()
RESULTS = json.loads((ROOT/'nbs/results/metashapes-default/results.json').read_text())

def _section(text:str, start:str, end:str) -> str:
    return text[text.index(start):text.index(end)].rstrip('\n')

def _index_cell(start:str) -> str:
    cells = json.loads((ROOT/'nbs/index.ipynb').read_text())['cells']
    hits = [''.join(c['source']) for c in cells if c['cell_type'] == 'markdown' and ''.join(c['source']).startswith(start)]
    assert len(hits) == 1, f"nbs/index.ipynb: expected one markdown cell starting with {start!r}, found {len(hits)}"
    return hits[0].rstrip('\n')

def test_readme_sections_match_index():
    "Install and Results read the same in both; only the links differ (the notebook lives in nbs/)."
    assert _section(README, '## Install and run', '## Notebook map') == _index_cell('## Install and run')
    readme = _section(README, '## Results\n', '## Citation').replace('](nbs/results/', '](results/')
    assert readme == _index_cell('## Results')

from hyperclip_nb.report import readme_results, ROW_LABELS

def test_readme_tables_are_generated_from_results_json():
    "The README's results tables are exactly `readme_results` of the committed results.json (and so is the docs home)."
    assert readme_results(RESULTS).rstrip('\n') in README
    assert readme_results(RESULTS).rstrip('\n') in _index_cell('## Results')

def test_readme_table_matches_results_json():
    "Each zero-shot cell of the README's table is the committed results.json's mean ± std, in % to 2 decimals."
    for name, m in RESULTS['methods'].items():
        label = ROW_LABELS[name]
        row = next((l for l in README.splitlines() if l.startswith(f'| {label} |')), None)
        assert row is not None, f"README.md: no results row {label!r}"
        cell = row.split('|')[2].strip().strip('*')
        assert cell == f"{100 * m['zero_shot_acc']:.2f} ± {100 * m['zero_shot_acc_std']:.2f}", (label, cell)

def test_readme_calibration_matches_results_json():
    "The calibration sentence states how many targets hold; results.json records the same checks."
    checks = RESULTS['calibration']['checks']
    assert f"{sum(checks.values())} of the {len(checks)} calibration targets hold" in README

def _map_rows(text:str, prefix:str) -> list:
    "(notebook, module) of each row of a notebook map, in order."
    sec = text[text.index('## Notebook map'):]
    sec = sec[:sec.index('## Running on Meta-VQA')] if '## Running on Meta-VQA' in sec else sec
    return [(m[1], m[2]) for m in re.finditer(rf'^\| \[(\w+)\]\({re.escape(prefix)}\1\.ipynb\) \| `?([\w.]*)`? \|', sec, re.M)]

def test_notebook_map_lists_every_notebook():
    "README's and the docs home's notebook maps list every notebook, in file order, with the module it exports."
    want = [('index', '')]
    for p in sorted((ROOT/'nbs').glob('[0-9]*.ipynb')):
        src = ''.join(json.loads(p.read_text())['cells'][0]['source'])
        m = re.search(r'#\| default_exp (\w+)', src)
        want.append((p.stem, f'hyperclip_nb.{m[1]}' if m else ''))
    assert _map_rows(README, 'nbs/') == want
    assert _map_rows(_index_cell('## Notebook map'), '') == want
