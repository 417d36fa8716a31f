"""Remove stored ipywidgets state and progress-bar outputs from the notebooks in nbs/ (in place):
`python scripts/strip_widgets.py`. `tests/test_docs.py` checks that none are left."""
import json, re
from pathlib import Path

WIDGET = 'application/vnd.jupyter.widget-view+json'
BAR = re.compile(r'\d+/\d+ \[[\d:]+<[\d:?]+, ')       # a tqdm line: " 12/50 [00:03<00:07, "

def strip(p:Path) -> int:
    nb, n = json.loads(p.read_text()), 0
    if nb.get('metadata', {}).pop('widgets', None) is not None: n += 1
    for c in nb['cells']:
        keep = [o for o in c.get('outputs', []) if WIDGET not in o.get('data', {})
                and not BAR.search(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', '')))]
        if 'outputs' in c and len(keep) != len(c['outputs']): n += len(c['outputs']) - len(keep); c['outputs'] = keep
    if n: p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return n

if __name__ == '__main__':
    for p in sorted((Path(__file__).resolve().parents[1]/'nbs').glob('*.ipynb')):
        if n := strip(p): print(f'{p.name}: {n} removed')
