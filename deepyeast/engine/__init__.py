"""A PyTorch engine that runs Caffe prototxts with Caffe's semantics.

``Net`` builds a net from a ``NetParameter`` (see :mod:`deepyeast.engine.net`);
``Solver`` (in :mod:`deepyeast.engine.solver`) trains it with Caffe's update
rules.  Both read and write Caffe's files.
"""

from deepyeast.engine.layers import LAYER_TYPES
from deepyeast.engine.net import Net, ParamInfo

__all__ = ["Net", "ParamInfo", "Solver", "LAYER_TYPES"]


def __getattr__(name):
    # the solver lives in its own module; import it lazily so Net works without it
    if name == "Solver":
        from deepyeast.engine.solver import Solver
        return Solver
    raise AttributeError(f"module 'deepyeast.engine' has no attribute {name!r}")
