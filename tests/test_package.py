"""Checks on the package as a whole: dependencies, version, safe loading, and that `hyperclip_nb/` is exactly what
the notebooks export."""
import ast, os, re, shutil, subprocess, sys, tempfile
from configparser import ConfigParser
from pathlib import Path
from conftest import REPO, nbdev_config, notebooks

LIB = REPO/'hyperclip_nb'
# Not exported from a notebook cell: nbdev writes the first two, and `__main__.py` (`python -m hyperclip_nb`) is a
# three-line shim kept by hand.
NOT_EXPORTED = {'__init__.py', '_modidx.py', '__main__.py'}


def lib_modules():
    "Every .py file under hyperclip_nb/, as a path relative to it."
    return sorted(p.relative_to(LIB) for p in LIB.rglob('*.py') if '__pycache__' not in p.parts)


def test_open_clip_and_torchvision_import():
    # A torch wheel that doesn't match torchvision's build fails right here (e.g. "operator torchvision::nms does
    # not exist"), in one line, instead of deep inside a notebook.
    import torch, torchvision, open_clip
    assert open_clip.list_models(), 'open_clip knows no model configs'


def test_version_matches_settings():
    import hyperclip_nb
    cfg = ConfigParser(delimiters=['='])
    cfg.read(REPO/'settings.ini', encoding='utf-8')
    assert hyperclip_nb.__version__ == cfg['DEFAULT']['version'], \
        'hyperclip_nb/__init__.py and settings.ini disagree on the version; run nbdev_export'


def _is_torch_load(func):
    "Is the called expression `torch.load` (or `torch.serialization.load`)?"
    name = ast.unparse(func)
    return name in ('torch.load', 'torch.serialization.load')


UNPICKLERS = ('pickle', 'dill', 'cloudpickle', 'joblib', 'shelve', 'marshal', '_pickle')


def test_no_pickle_loading():
    "`torch.load` only with `weights_only=True`, and no `pickle` at all: a checkpoint must never run code."
    bad = []
    for rel in lib_modules():
        src = (LIB/rel).read_text(encoding='utf-8')
        for node in ast.walk(ast.parse(src, filename=str(rel))):
            where = f'hyperclip_nb/{rel}:{getattr(node, "lineno", "?")}'
            if isinstance(node, ast.Import) and any(a.name.split('.')[0] in UNPICKLERS for a in node.names):
                bad.append(f'{where}: imports pickle')
            elif isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] in UNPICKLERS:
                bad.append(f'{where}: imports from {node.module}')
            elif isinstance(node, ast.ImportFrom) and node.module == 'torch' and any(a.name == 'load' for a in node.names):
                bad.append(f'{where}: imports torch.load by name; call torch.load(..., weights_only=True)')
            elif isinstance(node, ast.Call) and _is_torch_load(node.func):
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get('weights_only'), ast.Constant) and kw['weights_only'].value is True):
                    bad.append(f'{where}: {ast.unparse(node)} lacks weights_only=True')
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in ('torch.jit.load', 'pd.read_pickle', 'pandas.read_pickle'):
                bad.append(f'{where}: {ast.unparse(node.func)} can run code from the file')
            elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith('.load') and any(
                    k.arg == 'allow_pickle' and not (isinstance(k.value, ast.Constant) and k.value.value is False) for k in node.keywords):
                bad.append(f'{where}: {ast.unparse(node)} allows pickles')
    assert not bad, '\n'.join(sorted(bad))


def _export_targets(nb):
    "Modules that notebook `nb` writes: its `default_exp`, and any `#| export other_module` target."
    from execnb.nbio import read_nb
    from nbdev.process import extract_directives
    targets = set()
    for cell in read_nb(nb).cells:
        if cell.cell_type != 'code': continue
        d = extract_directives(cell, remove=False)
        if d.get('default_exp'): targets.add(d['default_exp'][0])
        for k in ('export', 'exports', 'exporti'):
            if d.get(k): targets.add(d[k][0])
    return targets


def test_every_module_has_its_notebook():
    "`#| default_exp X` in nbs/ <-> hyperclip_nb/X.py, both ways. `nbdev_export` never deletes an orphan."
    exported = {Path(*t.split('.')).with_suffix('.py') for nb in notebooks() for t in _export_targets(nb)}
    on_disk = {p for p in lib_modules() if str(p) not in NOT_EXPORTED}
    assert not exported - on_disk, f'notebooks export modules missing from hyperclip_nb/: {sorted(map(str, exported - on_disk))}; run nbdev_export'
    assert not on_disk - exported, f'modules no notebook exports (orphans; delete them): {sorted(map(str, on_disk - exported))}'


def test_library_matches_notebooks():
    "Export the notebooks into a scratch copy of the repo; every generated file must equal the committed one."
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copy(REPO/'settings.ini', tmp)
        shutil.copytree(REPO/'nbs', tmp/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
        (tmp/'hyperclip_nb').mkdir()
        for f in NOT_EXPORTED - {'_modidx.py'}:  # the hand-kept files; nbdev rewrites the version in __init__.py
            if (LIB/f).exists(): shutil.copy(LIB/f, tmp/'hyperclip_nb')
        env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}  # `nbdev_export` does nothing under IN_TEST
        r = subprocess.run([sys.executable, '-c', 'from nbdev.doclinks import nbdev_export; nbdev_export()'],
                           cwd=tmp, env=env, capture_output=True, text=True)
        assert r.returncode == 0, f'nbdev_export failed:\n{r.stdout}\n{r.stderr}'
        fresh = {p.relative_to(tmp/'hyperclip_nb') for p in (tmp/'hyperclip_nb').rglob('*.py')}
        ours = set(lib_modules())
        assert fresh == ours, (f'nbdev_export would write {sorted(map(str, fresh - ours))}; '
                               f'no notebook writes {sorted(map(str, ours - fresh))}')
        stale = [str(p) for p in sorted(fresh) if (tmp/'hyperclip_nb'/p).read_text(encoding='utf-8') != (LIB/p).read_text(encoding='utf-8')]
        assert not stale, f'hyperclip_nb/ differs from the notebooks in {stale}; run nbdev_export (and nbdev_clean) and commit'


def _stage_order():
    "The library's modules in the order of their notebooks (`#| default_exp`): the pipeline, first stage first."
    order = []
    for nb in notebooks():
        text = nb.read_text(encoding='utf-8')
        mod = next(iter(re.findall(r'#\| default_exp (\w+)', text)), None)
        if mod and mod not in order: order.append(mod)
    return order


def _imports_of(path):
    "Every hyperclip_nb module that `path` imports, at the top or inside a function (a lazy import is still an edge)."
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: out |= {node.module} if node.module else {a.name for a in node.names}
            elif node.module and node.module.startswith('hyperclip_nb'):
                out |= {node.module.split('.')[1]} if '.' in node.module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split('.')[1] for a in node.names if a.name.startswith('hyperclip_nb.')}
    return out - {'_modidx'}


def test_import_graph_is_a_pipeline():
    # Every module imports only modules whose notebooks come before its own: no circle, and no stage reaches forward.
    order = _stage_order()
    assert {'core', 'configs', 'pipeline', 'evaluation', 'report', 'reproduce'} <= set(order), order
    bad = [f'{mod} imports {dep}' for mod in order for dep in sorted(_imports_of(LIB/f'{mod}.py'))
           if dep not in order or order.index(dep) >= order.index(mod)]
    assert not bad, 'imports of a later (or the same) stage: ' + '; '.join(bad)
    assert _imports_of(LIB/'configs.py') <= {'core', 'meta_shapes'}, _imports_of(LIB/'configs.py')


MAX_MODULE_LINES = 700

def test_modules_stay_readable():
    # Each module is one notebook's code, read beside its lesson: none may grow past 700 lines (split the notebook instead).
    long = {p.name: n for p in LIB.glob('*.py') if p.name not in NOT_EXPORTED and (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f'modules over {MAX_MODULE_LINES} lines: {long}'
