"""Caffe's learning-rate policies (pure functions; real Caffe's logged rates are checked in test_solver_parity)."""

import math

import numpy as np
import pytest

from deepyeast.caffe import caffe_pb2
from deepyeast.engine.lr_policy import format_float, learning_rate
from deepyeast.utils.io import InputError


def solver(**fields):
    p = caffe_pb2.SolverParameter()
    p.base_lr = fields.pop("base_lr", 0.1)
    stepvalue = fields.pop("stepvalue", ())
    p.stepvalue.extend(stepvalue)
    for k, v in fields.items():
        setattr(p, k, v)
    return p


def rates(p, n):
    out, step = [], 0
    for it in range(n):
        r, step, _ = learning_rate(p, it, step)
        out.append(float(r))
    return out


def test_fixed_is_base_lr_in_float32():
    r = rates(solver(lr_policy="fixed", base_lr=0.01), 5)
    assert r == [float(np.float32(0.01))] * 5


def test_step_halves_at_each_boundary():
    p = solver(lr_policy="step", gamma=0.5, stepsize=10)
    r = rates(p, 31)
    assert r[0] == r[9] == pytest.approx(0.1)
    assert r[10] == r[19] == pytest.approx(0.05)
    assert r[20] == pytest.approx(0.025) and r[30] == pytest.approx(0.0125)
    _, step, _ = learning_rate(p, 25, 0)
    assert step == 2  # step sets current_step like Caffe


def test_multistep_advances_one_step_per_call():
    p = solver(lr_policy="multistep", gamma=0.1, stepvalue=[3, 5])
    seq, step, msgs = [], 0, []
    for it in range(7):
        r, step, msg = learning_rate(p, it, step)
        seq.append(float(r))
        if msg:
            msgs.append(msg)
    assert seq[:3] == [pytest.approx(0.1)] * 3
    assert seq[3] == pytest.approx(0.01) and seq[5] == pytest.approx(0.001)
    assert msgs == ["MultiStep Status: Iteration 3, step = 1", "MultiStep Status: Iteration 5, step = 2"]
    # resuming at iteration 6 with the restored current_step keeps the rate
    r, step2, _ = learning_rate(p, 6, 2)
    assert step2 == 2 and float(r) == pytest.approx(0.001)


def test_exp_inv_poly_sigmoid_follow_caffe_formulas():
    base, g, pw = 0.1, 0.9, 0.75
    assert rates(solver(lr_policy="exp", gamma=g), 4)[3] == pytest.approx(base * g ** 3, rel=1e-6)
    assert rates(solver(lr_policy="inv", gamma=0.01, power=pw), 11)[10] == pytest.approx(
        base * (1 + 0.01 * 10) ** -pw, rel=1e-6)
    assert rates(solver(lr_policy="poly", power=2.0, max_iter=20), 11)[10] == pytest.approx(
        base * (1 - 10 / 20) ** 2, rel=1e-6)
    assert rates(solver(lr_policy="sigmoid", gamma=0.5, stepsize=8), 13)[12] == pytest.approx(
        base / (1 + math.exp(-0.5 * (12 - 8))), rel=1e-6)


def test_rates_are_float32_values():
    for pol in ("fixed", "step", "exp", "inv", "poly", "sigmoid"):
        p = solver(lr_policy=pol, gamma=0.9, power=0.5, stepsize=3, max_iter=10)
        r, _, _ = learning_rate(p, 4, 0)
        assert isinstance(r, np.float32)


def test_bad_policies_name_the_field():
    with pytest.raises(InputError, match="unknown lr_policy \"cosine\""):
        learning_rate(solver(lr_policy="cosine"), 0)
    with pytest.raises(InputError, match="gamma >= 0"):
        learning_rate(solver(lr_policy="sigmoid", gamma=-0.1, stepsize=3), 0)
    with pytest.raises(InputError, match="stepsize"):
        learning_rate(solver(lr_policy="step", gamma=0.5), 0)


def test_format_float_matches_cpp_ostream():
    assert format_float(np.float32(0.1)) == "0.1"
    assert format_float(1e-5) == "1e-05"
    assert format_float(0.0125) == "0.0125"
    assert format_float(123456789.0) == "1.23457e+08"


# ---------------------------------------------------------------- edges found by mutation testing (make mutation)

def test_edges_of_the_policies_checks():
    """The boundaries of each check, the defaults and the exact messages (mutants of them survived)."""
    # multistep from the default current_step (0): the first boundary is crossed at its iteration, once
    p = solver(lr_policy="multistep", gamma=0.5, stepvalue=[3, 5])
    assert learning_rate(p, 2) == (np.float32(0.1), 0, None)
    rate, step, message = learning_rate(p, 3)
    assert (rate, step, message) == (np.float32(0.05), 1, "MultiStep Status: Iteration 3, step = 1")
    # stepsize 1 and max_iter 1 are allowed; 0 is not, and the message names the value
    assert learning_rate(solver(lr_policy="step", gamma=0.5, stepsize=1), 2)[0] == np.float32(0.025)
    assert learning_rate(solver(lr_policy="poly", power=1.0, max_iter=1), 0)[0] == np.float32(0.1)
    with pytest.raises(InputError, match=r'^solver: lr_policy "poly" needs max_iter > 0, got 0$'):
        learning_rate(solver(lr_policy="poly", power=1.0, max_iter=0), 0)
    with pytest.raises(InputError, match=r'^solver: lr_policy "step" needs stepsize > 0, got 0$'):
        learning_rate(solver(lr_policy="step", gamma=0.5, stepsize=0), 0)
    # gamma 0 is allowed (the rate drops to 0 after the first step), a negative one is not
    assert learning_rate(solver(lr_policy="step", gamma=0.0, stepsize=2), 2)[0] == 0
    with pytest.raises(InputError, match='needs gamma >= 0, got -0.5'):
        learning_rate(solver(lr_policy="exp", gamma=-0.5), 1)
    with pytest.raises(InputError, match=r'^solver: unknown lr_policy "cosine" \(Caffe knows fixed, step, exp, inv, '
                                         r'multistep, poly, sigmoid\)$'):
        learning_rate(solver(lr_policy="cosine"), 0)


def test_power_outside_math_pow_follows_cs_powf():
    """A power that overflows a double (math.pow raises) gives inf, as C's powf does (``inv``); a negative base
    with a fractional power gives NaN (``poly`` past max_iter), as in Caffe."""
    big = learning_rate(solver(lr_policy="inv", gamma=1e30, power=-20.0), 10)[0]
    assert np.isinf(big) and big > 0 and big.dtype == np.float32
    past = learning_rate(solver(lr_policy="poly", power=0.5, max_iter=2), 3)[0]
    assert np.isnan(past) and past.dtype == np.float32


def test_sigmoid_long_before_its_step_is_zero_as_cs_expf_overflows_to_inf():
    """exp(-gamma (it - stepsize)) beyond a double's range: C's expf gives inf and the rate 1 / (1 + inf) = 0
    (math.exp raises OverflowError there; a NaN would stop training)."""
    rate = learning_rate(solver(lr_policy="sigmoid", gamma=10.0, stepsize=1000), 0)[0]
    assert rate == 0 and not np.isnan(rate) and rate.dtype == np.float32
