"""Every notebook under nbs/ is a test: run it the way `nbdev_test` does, one pytest test per notebook.

`pytest -n 2 tests` then runs two notebooks at a time. One notebook alone: `pytest tests -k 00_core`.
"""
import io, os, sys, contextlib
import pytest
from nbdev.test import test_nb as run_nb
from conftest import REPO, nbdev_config, notebooks

# Cells flagged with any of these (`#| slow`, `#| notest`) are skipped, exactly as `nbdev_test` skips them.
SKIP_FLAGS = nbdev_config().tst_flags.split()
NBS = notebooks()


@pytest.mark.parametrize('nb', NBS, ids=[str(f.relative_to(nbdev_config().nbs_path).with_suffix('')) for f in NBS])
def test_notebook(nb):
    os.environ['IN_TEST'] = '1'  # conftest set it already; `test_nb` sets it too, but only outside Jupyter
    err = io.StringIO()
    # `test_nb` runs the notebook in this process with cwd = the notebook's folder (nbs/), and on failure writes
    # the notebook's traceback to stderr and returns False. Catch that text to make it the failure message.
    with contextlib.redirect_stderr(err):
        ok, secs = run_nb(nb, skip_flags=SKIP_FLAGS, basepath=REPO)
    if not ok: pytest.fail(f'{nb.name} failed after {secs:.1f}s\n{err.getvalue()}', pytrace=False)
    sys.stderr.write(err.getvalue())  # anything else the run wrote (warnings) stays visible with `pytest -rA`
