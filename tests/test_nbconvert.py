"""The notebooks users run: execute them top to bottom in a real Jupyter kernel (`jupyter nbconvert --execute`), in tiny
mode, as a user's "Run All" would, except for the cells `nbdev_test` skips too (`#| slow`, `#| notest`, `#| eval: false`).

`test_notebooks.py` runs every notebook in this process through execnb; this catches what only a real kernel shows: a
widget that needs a front end, `display` and matplotlib backends, imports that the test process happened to provide.
"""
import os, re, subprocess, sys, tempfile, time
from pathlib import Path
import pytest
from conftest import REPO, nbdev_config

NBS = ['12_evaluation.ipynb', '14_demo.ipynb']
SKIP_FLAGS = nbdev_config().tst_flags.split()

# nbconvert removes, before executing, every cell whose source matches (`re.match`, so from the cell's start): a
# block of directive lines, one of which is a skip flag. The Full-run cells of these notebooks build the default
# world, minutes to hours.
SKIP_CELL = r'(?:#\s*\|[^\n]*\n)*#\s*\|\s*(?:' + '|'.join(map(re.escape, SKIP_FLAGS)) + r'|eval:\s*false)\b'


def test_skip_pattern():
    "The pattern removes exactly the cells `nbdev_test` would skip."
    m = lambda src: re.match(SKIP_CELL, src) is not None
    assert m('#| slow\nx = 1') and m('#| notest\nx') and m('#| export\n#| slow\nx') and m('#| eval: false\nx')
    assert not m('#| export\ndef slow(): pass') and not m('x = 1  #| slow') and not m('#| hide\nimport nbdev')


def _kernel_name(nb:Path) -> str:
    import json
    return json.loads(nb.read_text(encoding='utf-8')).get('metadata', {}).get('kernelspec', {}).get('name') or 'python3'


@pytest.mark.parametrize('name', NBS, ids=[n.removesuffix('.ipynb') for n in NBS])
def test_nbconvert_execute(name):
    nb = REPO/'nbs'/name
    assert nb.exists(), f'{nb} not found'
    from jupyter_client.kernelspec import KernelSpecManager
    kernel = _kernel_name(nb)
    if kernel not in KernelSpecManager().find_kernel_specs():
        pytest.fail(f"no Jupyter kernel {kernel!r}; install one with `python -m ipykernel install --user --name {kernel}`")
    # conftest set IN_TEST, MPLBACKEND and HYPERCLIP_NB_CACHE: the kernel inherits them and shares the session's cache.
    env = os.environ | {'IN_TEST': '1', 'MPLBACKEND': 'Agg', 'PYDEVD_DISABLE_FILE_VALIDATION': '1'}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'notebook', '--execute', '--output-dir', out,
               '--ExecutePreprocessor.timeout=600', f'--ExecutePreprocessor.kernel_name={kernel}',
               # off unless enabled; one list item per flag (a bracketed list would become one odd pattern)
               '--RegexRemovePreprocessor.enabled=True', f'--RegexRemovePreprocessor.patterns={SKIP_CELL}', str(nb)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=REPO/'nbs', env=env, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        tail = '\n'.join((r.stdout + r.stderr).splitlines()[-60:])
        assert r.returncode == 0, f'{name} failed under `jupyter nbconvert --execute` after {secs:.0f}s:\n{tail}'
        assert (Path(out)/name).exists(), f'nbconvert wrote no {name} into {out}:\n{tail}'
        import json
        ran = [''.join(c['source']) for c in json.loads((Path(out)/name).read_text(encoding='utf-8'))['cells']]
        assert not [s for s in ran if re.match(SKIP_CELL, s)], f'{name}: nbconvert kept cells flagged {SKIP_FLAGS}'
    sys.stderr.write(f'{name}: executed in a Jupyter kernel in {secs:.1f}s\n')
