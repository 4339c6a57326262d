"""bench/bench_screen_run.py --speed: the figures it writes follow from the runs' records (cells per second,
two workers against one, the goal, the reference), and it reads what classify_screen's summary.json holds."""

import argparse

from bench import bench_screen_run as bsr
from deepyeast.analysis.screen_run import STEPS


def _steps(network, segment):
    return dict(dict.fromkeys(STEPS, 0.0), network=network, read_and_segment=segment)


def test_speed_figures_follow_from_the_records():
    args = argparse.Namespace(model="runs/demo/model", n=100, rounds=2, against="abc1234", chunk=16)
    settings = [("this tree", "bf16", 1), ("this tree", "bf16", 2), ("this tree", "fp32", 2),
                ("abc1234 (2026-12-01)", "bf16", 2)]
    best = {settings[0]: (110.0, 100.0, 10000, _steps(80.0, 15.0)),
            settings[1]: (60.0, 50.0, 10000, _steps(84.0, 16.0)),
            settings[2]: (100.0, 90.0, 10000, _steps(160.0, 16.0)),
            settings[3]: (90.0, None, 10000, None)}
    md = bsr.speed_markdown(args, settings, best)
    assert "| this tree | bf16 | 2 | 60.0 | 167 | 50.0 | 200 |" in md
    assert "| abc1234 (2026-12-01) | bf16 | 2 | 90.0 | 111 | not recorded | |" in md
    assert "| this tree | bf16 | 1 | 1.50 | 0.00 | 0.00 | 8.00 | 0.00 | 0.00 |" in md  # ms per cell
    assert "Two workers against one (bf16, chunks' phase): 2.00x (wall 1.83x)" in md
    assert "8.00 ms alone, 8.40 ms with two workers busy" in md
    assert "200 cells/s in the chunks' phase, 167 end to end: NOT met." in md
    assert "its wall time over this tree's 1.50 (above 1: this tree is faster)" in md
    best[settings[1]] = (30.0, 25.0, 10000, _steps(84.0, 16.0))
    assert "333 end to end: met." in bsr.speed_markdown(args, settings, best)


def test_the_goal_is_set_against_the_cpus_ceiling_in_bf16():
    args = argparse.Namespace(model="runs/demo/model", n=100, rounds=1, against=None, chunk=16)
    settings = [("this tree", "bf16", 1), ("this tree", "bf16", 2), ("this tree", "fp32", 2)]
    best = {settings[0]: (110.0, 100.0, 10000, _steps(80.0, 15.0)),
            settings[1]: (80.0, 50.0, 10000, _steps(84.0, 16.0)),
            settings[2]: (100.0, 90.0, 10000, _steps(160.0, 16.0))}
    # the AMD EPYC's measured bf16 limit: 452 GFLOP/s over 1.839 GFLOP per cell = 246 cells/s < 280
    md = bsr.speed_markdown(args, settings, best, ((452.0, "GEMM F.linear 1024^3"), 1.839))
    assert ("452 GFLOP/s measured on 2 threads (GEMM F.linear 1024^3) over 1.839 GFLOP per cell = 246 cells/s "
            "for the network alone, nothing else done: the goal is beyond this CPU's reach in bf16; this tree "
            "reaches 51% of that ceiling end to end.") in md
    # an AMX CPU's (the 1,700 GFLOP/s): 924 cells/s
    md = bsr.speed_markdown(args, settings, best, ((1700.0, "GEMM torch.mm 2048^3"), 1.839))
    assert "= 924 cells/s" in md and "the goal is within this CPU's reach" in md
    assert "ceiling" not in bsr.speed_markdown(args, settings, best)
