"""Snapshot file names, defined once: ``{prefix}_iter_{N}{suffix}``.

The solver writes them (:meth:`deepyeast.engine.solver.Solver.snapshot`), real Caffe writes the
first two suffixes under the same names, and ``-snapshot auto``, the snapshot rules of
:mod:`deepyeast.engine.run_config` and the training-log reader find them again -- all through
this module.
"""

import glob
import os
import re

__all__ = ["WEIGHTS_SUFFIX", "SOLVERSTATE_SUFFIX", "STATE_SUFFIX", "SNAPSHOT_SUFFIXES", "snapshot_name",
           "iteration_of", "snapshots_on_disk", "latest_solverstate"]

WEIGHTS_SUFFIX = ".caffemodel"
SOLVERSTATE_SUFFIX = ".solverstate"
STATE_SUFFIX = ".dystate.npz"
"""The engine's state beside a solverstate (data cursors, random streams; :mod:`deepyeast.engine.resume`)."""
SNAPSHOT_SUFFIXES = (WEIGHTS_SUFFIX, SOLVERSTATE_SUFFIX, STATE_SUFFIX)
"""The files of one snapshot (real Caffe writes the first two)."""

_TAIL = r"(\d+)(" + "|".join(re.escape(s) for s in SNAPSHOT_SUFFIXES) + r")"
_ITER = re.compile(r"_iter_" + _TAIL + r"$")
_NAME_TAIL = re.compile(_TAIL)


def snapshot_name(prefix, iteration, suffix=WEIGHTS_SUFFIX):
    """``{prefix}_iter_{iteration}{suffix}``."""
    return f"{os.fspath(prefix)}_iter_{int(iteration)}{suffix}"


def iteration_of(path, suffix=None):
    """The iteration N of a snapshot file ``..._iter_N<suffix>`` (any snapshot suffix when None), else None."""
    m = _ITER.search(os.fspath(path))
    if not m or (suffix is not None and m.group(2) != suffix):
        return None
    return int(m.group(1))


def snapshots_on_disk(prefix):
    """iteration -> list of the snapshot files of ``prefix`` on disk (renamed ``*.diverged`` files are not
    snapshots any more and are not listed)."""
    prefix = os.fspath(prefix)
    folder = os.path.dirname(os.path.abspath(prefix)) or "."
    stem = os.path.basename(prefix)
    found = {}
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        m = _NAME_TAIL.fullmatch(name[len(stem) + len("_iter_"):]) if name.startswith(stem + "_iter_") else None
        if m:
            found.setdefault(int(m.group(1)), []).append(os.path.join(folder, name))
    return found


def latest_solverstate(prefix):
    """Newest ``{prefix}_iter_N.solverstate`` (largest N), or None."""
    best, best_n = None, -1
    for path in glob.glob(glob.escape(os.fspath(prefix)) + "_iter_*" + SOLVERSTATE_SUFFIX):
        it = iteration_of(path, SOLVERSTATE_SUFFIX)
        if it is not None and it > best_n:
            best, best_n = path, it
    return best
