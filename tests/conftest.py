"""Shared setup for the test suite: the environment a notebook sees under `nbdev_test`, and the notebook list.

This file runs before any test module is imported, which matters: `hyperclip_nb.core` reads `IN_TEST` once, at
import time, and the notebooks execute in this same process (as they do under `nbdev_test`). So the environment
is set here, at module level, rather than in a fixture.
"""
import os, tempfile, shutil, atexit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

os.environ['IN_TEST'] = '1'
# Headless: CI has no display, and a notebook must never open a window.
os.environ.setdefault('MPLBACKEND', 'Agg')

# Tests never touch ~/.cache. When the variable is unset, the first pytest process makes an empty cache for the
# session and removes it at exit; xdist workers start later and inherit it, so they share one cache (artifact
# writes are atomic and locked, see 00_core).
if not os.environ.get('HYPERCLIP_NB_CACHE'):
    _cache = tempfile.mkdtemp(prefix='hyperclip_nb_cache_')
    os.environ['HYPERCLIP_NB_CACHE'] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)


def nbdev_config():
    "This repo's nbdev config, whatever the cwd pytest was started from."
    from nbdev.config import get_config
    return get_config(path=REPO)


def notebooks():
    "The notebooks `nbdev_test` would run: under nbs/, skipping names (and folders) that start with '_' or '.'."
    from fastcore.xtras import globtastic
    cfg = nbdev_config()
    # The same filters as `nbdev.doclinks.nbglob`, which reads `recursive` from the cwd's config instead of ours.
    files = globtastic(cfg.nbs_path, file_glob='*.ipynb', skip_folder_re='^[_.]', skip_file_re='^[_.]',
                       recursive=cfg.recursive).map(Path)
    # `nbdev_test` also skips every notebook in a folder that holds a `.notest` file.
    return sorted(f for f in files if not (f.parent/'.notest').exists())
