"""Run a step (``data_prep/*.py``, ``analysis/*.py``) in this process, as its script's command line would
(not a test module).

Faster than a subprocess (no second import of torch); the step's own ``options``/``run`` (its module in
``deepyeast/commands``, which the thin script calls) and :func:`deepyeast.launcher.main` run unchanged, so
exit codes and the one-line errors are the real ones.
"""

import importlib
import os

from deepyeast import launcher
from deepyeast.commands import STEPS


def step_module(script):
    """The module of the step whose script is ``script`` (relative to the repository, e.g. ``data_prep/make_lmdb.py``)."""
    (step,) = [s for s in STEPS if s.script == script]
    return importlib.import_module(step.dotted)


def run_step(script, *argv):
    """Run ``script`` with the arguments ``argv`` (converted to str); returns its exit code."""
    module = step_module(script)
    return launcher.main(module.__doc__, module.options, module.run, argv=[str(a) for a in argv],
                         prog=os.path.basename(script), exit=False)


def one_error_line(capsys, *parts):
    """The one ``<prog>: error: ...`` line a step printed on stderr (no traceback), holding every part."""
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]
