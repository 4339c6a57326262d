"""Caffe's learning-rate policies, computed with Caffe's own float/double mix.

Caffe's ``SGDSolver<float>::GetLearningRate`` reads the solver's float fields
(``base_lr``, ``gamma``, ``power``).  C++ overload rules decide the precision:
``pow(float, int)`` (step, multistep, exp) is double math rounded to float,
while ``inv``, ``poly`` and ``sigmoid`` call ``pow(float, float)`` /
``exp(float)`` and stay in float throughout (checked against real Caffe's
logged rates).  :func:`learning_rate` reproduces those
steps so the rate, and the ``Iteration N, lr = X`` line, match real Caffe.
"""

import math

import numpy as np

from deepyeast.utils.io import InputError

__all__ = ["POLICIES", "learning_rate", "format_float", "check_solver_numbers"]

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")

_f32 = np.float32


def format_float(value):
    """Format a number like C++ ``ostream <<`` with default precision (``%g``, 6 digits)."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:g}"


def learning_rate(param, iteration, current_step=0):
    """The learning rate Caffe uses for the update at ``iteration``.

    Parameters
    ----------
    param : caffe_pb2.SolverParameter
        Reads lr_policy, base_lr, gamma, power, stepsize, stepvalue, max_iter.
    iteration : int
        Number of updates done so far (Caffe's ``iter_``).
    current_step : int
        Caffe's ``current_step_`` (only ``multistep`` keeps state in it).

    Returns
    -------
    (rate, current_step, message)
        ``rate`` is a ``numpy.float32``; ``current_step`` the updated step
        counter (``step`` sets it to iteration // stepsize, ``multistep``
        advances it by at most one per call, as Caffe does); ``message`` the
        line Caffe logs when a multistep boundary is crossed, else None.
    """
    policy = param.lr_policy
    base = _f32(param.base_lr)
    it = int(iteration)
    message = None
    if policy == "fixed":
        rate = base
    elif policy == "step":
        if param.stepsize <= 0:
            raise InputError(f"solver: lr_policy \"step\" needs stepsize > 0, got {param.stepsize}")
        _check_gamma(param)
        current_step = it // param.stepsize
        rate = _f32(float(base) * math.pow(float(_f32(param.gamma)), current_step))
    elif policy == "exp":
        _check_gamma(param)
        rate = _f32(float(base) * math.pow(float(_f32(param.gamma)), it))
    elif policy == "inv":
        _check_gamma(param)
        inner = _f32(_f32(1) + _f32(param.gamma) * _f32(it))
        rate = _f32(base * _powf(inner, -_f32(param.power)))
    elif policy == "multistep":
        steps = list(param.stepvalue)
        if current_step < len(steps) and it >= steps[current_step]:
            current_step += 1
            message = f"MultiStep Status: Iteration {it}, step = {current_step}"
        rate = _f32(float(base) * math.pow(float(_f32(param.gamma)), current_step))
    elif policy == "poly":
        if param.max_iter <= 0:
            raise InputError(f"solver: lr_policy \"poly\" needs max_iter > 0, got {param.max_iter}")
        inner = _f32(_f32(1) - _f32(_f32(it) / _f32(param.max_iter)))
        rate = _f32(base * _powf(inner, _f32(param.power)))
    elif policy == "sigmoid":
        _check_gamma(param)  # real Caffe 1.0 refuses a negative gamma here too
        arg = _f32(-_f32(param.gamma) * _f32(_f32(it) - _f32(param.stepsize)))
        rate = _f32(base * _f32(_f32(1) / _f32(_f32(1) + _expf(arg))))
    else:
        raise InputError(f"solver: unknown lr_policy \"{policy}\" (Caffe knows {', '.join(POLICIES)})")
    return rate, current_step, message


def _powf(x, y):
    """C++ ``std::pow(float, float)``: float result (glibc's powf is correctly rounded in practice)."""
    try:
        return _f32(math.pow(float(x), float(y)))
    except (OverflowError, ValueError):
        return _f32(np.power(np.float64(x), np.float64(y)))


def _expf(x):
    """C++ ``std::exp(float)``: float result."""
    try:
        return _f32(math.exp(float(x)))
    except OverflowError:
        return _f32(np.inf)


def _check_gamma(param):
    if param.gamma < 0:
        raise InputError(f"solver: lr_policy \"{param.lr_policy}\" needs gamma >= 0, got {param.gamma}")


def check_solver_numbers(p):
    """Refuse solver numbers that make no sense (a negative ``base_lr`` or ``max_iter``, a NaN
    momentum, ...) with :class:`InputError`, before any work; Caffe accepts some and misbehaves."""
    def bad(field, value, rule):
        raise InputError(f"solver: {field} is {format_float(value)}; it must be {rule}")

    for field in ("base_lr", "momentum", "weight_decay", "gamma", "power", "delta", "clip_gradients"):
        value = getattr(p, field)
        if not math.isfinite(value):
            bad(field, value, "a finite number")
    if p.base_lr < 0:
        bad("base_lr", p.base_lr, ">= 0")
    if p.momentum < 0:
        bad("momentum", p.momentum, ">= 0")
    if p.weight_decay < 0:
        bad("weight_decay", p.weight_decay, ">= 0")
    for field in ("max_iter", "display", "snapshot", "test_interval", "stepsize"):
        if getattr(p, field) < 0:
            raise InputError(f"solver: {field} is {getattr(p, field)}; it must be >= 0")
    for k, n in enumerate(p.test_iter):
        if n < 1:
            raise InputError(f"solver: test_iter #{k} is {n}; it must be >= 1")
