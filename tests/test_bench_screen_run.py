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
