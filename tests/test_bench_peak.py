"""bench/_peak.py (issue 24, item 1): the arithmetic of the engine bench's limits and percentages.

No figure the bench writes can exceed 100%: every percentage is of the measured limit, which is the
best GEMM of the precision unless a workload beat them all; the data-sheet peak comes from the ISA
flags and is never printed below a measurement.
"""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

import _peak  # noqa: E402


# the rates of the measurement on the AMX CPU (GFLOP/s): torch's best GEMMs, and the old
# bench's "peak" (one 4096^2 torch.mm) that the training figures exceeded
GEMM = {("fp32", "torch.mm", "4096^3"): 250.0, ("fp32", "oneDNN conv 1x1 NHWC", "16384x4096x4096"): 300.0,
        ("bf16", "torch.mm", "4096^3"): 700.0, ("bf16", "F.linear", "2048^3"): 1765.0}


def test_a_workload_faster_than_every_gemm_becomes_the_limit_and_nothing_exceeds_100():
    workloads = {"training fp32": ("fp32", 320.0), "training bf16": ("bf16", 660.0),
                 "inference bf16": ("bf16", 1200.0)}
    lim = _peak.limits(GEMM, workloads)
    assert lim["bf16"] == (1765.0, "GEMM F.linear 2048^3")
    assert lim["fp32"][0] == 320.0 and "training fp32" in lim["fp32"][1]
    pct = {name: _peak.percent(rate, lim[p][0]) for name, (p, rate) in workloads.items()}
    assert pct["training bf16"] == pytest.approx(100 * 660 / 1765)
    assert pct["training fp32"] == pytest.approx(100.0)
    assert all(0 < v <= 100 for v in pct.values())
    # the old bench's figure (one torch.mm as the peak) was 660 / 700 of bf16 and 320 / 250 = 128% of fp32
    with pytest.raises(ValueError, match="exceeds the limit"):
        _peak.percent(320.0, GEMM[("fp32", "torch.mm", "4096^3")])


def test_isa_flops_per_cycle_follow_the_flags():
    amx = _peak.isa_flops_per_cycle(["avx", "fma", "avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"])
    assert (amx["fp32"], amx["bf16"]) == (64, 2048)
    assert (_peak.isa_flops_per_cycle(["avx", "fma", "avx2", "avx512f", "avx512_bf16"])["bf16"]) == 128
    zen2 = _peak.isa_flops_per_cycle(["avx", "fma", "avx2"])
    assert (zen2["fp32"], zen2["bf16"]) == (32, 32)
    cpu = dict(flags=["avx", "fma", "avx2", "avx512f", "amx_bf16"], ghz=2.6, vendor="GenuineIntel")
    assert _peak.isa_peaks(cpu, 2) == {"fp32": pytest.approx(64 * 2.6 * 2), "bf16": pytest.approx(2048 * 2.6 * 2)}
    assert _peak.isa_peaks(dict(cpu, ghz=None), 2) == {"fp32": None, "bf16": None}


def test_percent_of_isa_is_never_above_100():
    assert _peak.percent_of_isa(166.4, 332.8) == pytest.approx(50.0)
    assert _peak.percent_of_isa(400.0, 332.8) is None  # a turbo clock above the one read: not a percentage
    assert _peak.percent_of_isa(100.0, None) is None


def test_merge_best_keeps_the_best_round():
    acc = _peak.merge_best({}, {"a": 1.0, "b": 5.0})
    assert _peak.merge_best(acc, {"a": 3.0, "b": 2.0}) == {"a": 3.0, "b": 5.0}


def test_cpu_description_reads_this_machine():
    cpu = _peak.cpu_description()
    assert cpu["cores"] >= 1 and cpu["model"]
    assert set(cpu["flags"]) <= set(_peak.FLAGS_THAT_MATTER)
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    assert cpu["flags"] == [f for f in _peak.FLAGS_THAT_MATTER if f in flags]


def test_gemm_rates_measure_every_path_and_precision():
    rates = _peak.gemm_rates(sizes=(128,), reps=1, warmup_s=0.0)
    assert {(p, path) for p, path, _ in rates} == {(p, path) for p in ("fp32", "bf16")
                                                   for path in ("torch.mm", "F.linear", "oneDNN conv 1x1 NHWC")}
    assert all(v > 0 for v in rates.values())


def test_ceilings_and_reach():
    assert _peak.ceiling(452.0, 1.839) == pytest.approx(245.8, abs=0.1)
    assert _peak.reach(280, 245.8) == "beyond" and _peak.reach(280, 924.0) == "within"
    assert _peak.reach(720, 548.0, higher_is_better=False) == "within"  # a time goal: the least time
    assert _peak.reach(720, 900.0, higher_is_better=False) == "beyond"
    with pytest.raises(ValueError, match="positive"):
        _peak.ceiling(None, 1.839)


def test_the_deploy_nets_forward_arithmetic_per_cell():
    # DeepYeast: 8 convolutions and 3 inner products, 1.839 GFLOP per 64 x 64 cell (bench/RESULTS.md)
    flop, _ = _peak.net_arithmetic(os.path.join(REPO, "models", "deepyeast", "deploy.prototxt"))
    assert flop / 1e9 == pytest.approx(1.839, abs=5e-4)
