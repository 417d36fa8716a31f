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

# README row label -> method name in results.json
ROWS = {'zero-shot CLIP (reference)': 'zero_shot_clip',
        "oracle: fine-tuned on each test task's support set (reference)": 'oracle_finetune',
        'unconditional multitask (Algorithm 2)': 'uncond_multitask', 'conditional multitask (Algorithm 5)': 'cond_multitask',
        'HNet + HyperLDM, DDIM 50 steps (Algorithms 12–14)': 'hnet_hyperldm',
        'HNet + HyperCLIP guidance (Algorithms 9, 11)': 'hnet_hyperclip'}

def test_readme_table_matches_results_json():
    "Each zero-shot cell of the README's table is the committed results.json's mean ± std, in % to 2 decimals."
    for label, name in ROWS.items():
        row = next((l for l in README.splitlines() if l.startswith(f'| {label} |')), None)
        assert row is not None, f"README.md: no results row {label!r}"
        cell = row.split('|')[2].strip().strip('*')
        m = RESULTS['methods'][name]
        assert cell == f"{100 * m['zero_shot_acc']:.2f} ± {100 * m['zero_shot_acc_std']:.2f}", (label, cell)

def test_readme_calibration_matches_results_json():
    "The calibration paragraph states which targets hold; results.json records the same checks."
    cal = RESULTS['calibration']; checks = cal['checks']
    para = _section(README, '**Calibration.**', '**Speed and memory.**')
    oracle, gap = 100 * cal['oracle_finetune'], 100 * (cal['oracle_finetune'] - cal['uncond_multitask'])
    assert f'({oracle:.1f} ± ' in para, oracle
    assert f'the gap is {gap:.1f} points' in para, gap
    short = re.search(r'the oracle falls ([0-9.]+) points short', para)
    assert bool(short) == (not checks['oracle_finetune >= 0.85'])
    if short: assert abs(float(short.group(1)) - (85 - oracle)) < 0.05 + 1e-9, short.group(0)
    n_held = sum(checks.values())
    assert {3: 'All three hold', 2: 'Two of the three hold', 1: 'One of the three holds', 0: 'None of the three holds'}[n_held] in para
