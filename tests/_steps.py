"""Run a step script (``data_prep/*.py``, ``analysis/*.py``) in this process, as its command line would
(not a test module).

Faster than a subprocess (no second import of torch); the script's own ``options``/``run`` and
:func:`deepyeast.launcher.main` run unchanged, so exit codes and the one-line errors are the real ones.
"""

import importlib.util
import os

from deepyeast import launcher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_step(script):
    """The module of the step script ``script`` (a path relative to the repository, e.g. ``data_prep/make_lmdb.py``)."""
    path = os.path.join(REPO, script)
    name = "_step_" + script.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_step(script, *argv):
    """Run ``script`` with the arguments ``argv`` (converted to str); returns its exit code."""
    module = load_step(script)
    return launcher.main(module.__doc__, module.options, module.run, argv=[str(a) for a in argv],
                         prog=os.path.basename(script), exit=False)
