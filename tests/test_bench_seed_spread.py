"""bench/bench_seed_spread.py --reuse-run (issue 23): a make demo run is taken as one training seed and
the base of the others only when it is a finished run of the same settings; anything else stops with one
line naming what differs, before any training starts."""

import argparse
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench import bench_seed_spread as spread  # noqa: E402

SOLVER = "base_lr: 0.01\nstepsize: 150\nmax_iter: 450\nrandom_seed: 1\n"


def _demo_run(root, size="demo", seed=0, solver=SOLVER, commands="deepyeast bnstats -iterations 30\n"
              "analysis/cp_features.py --sample 6000\n"):
    """The files of a finished make demo run that --reuse-run reads (contents as the pipeline writes them)."""
    for part in (("cells", "result.json"), ("proteins", "result.json"), ("rf", "cells_test.csv"),
                 ("rf_proteins", "result.json")):
        os.makedirs(os.path.join(root, part[0]), exist_ok=True)
        with open(os.path.join(root, *part), "w") as f:
            f.write("{}")
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    with open(os.path.join(root, "data", "screen.json"), "w") as f:
        json.dump({"size": size, "seed": seed}, f)
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    with open(os.path.join(root, "train", "solver.prototxt"), "w") as f:
        f.write(solver)
    with open(os.path.join(root, "commands.txt"), "w") as f:
        f.write(commands)
    return str(root)


def _args(**kw):
    base = dict(size="demo", iters=450, bn_iters=30, cp_train_cells=6000)
    base.update(kw)
    return argparse.Namespace(**base)


def test_a_finished_demo_run_of_the_same_settings_gives_its_training_seed(tmp_path):
    assert spread._reused_run(_demo_run(tmp_path / "run"), _args()) == 1


@pytest.mark.parametrize("change, args, words", [
    (dict(size="small"), {}, "screen size small"),
    (dict(seed=3), {}, "seed 3"),
    (dict(solver=SOLVER.replace("max_iter: 450", "max_iter: 150")), {}, "trained 150 iterations, not --iters 450"),
    (dict(commands="deepyeast bnstats -iterations 5\nanalysis/cp_features.py --sample 6000\n"), {},
     "BatchNorm statistics"),
    (dict(commands="deepyeast bnstats -iterations 30\n"), {}, "CellProfiler features"),
    ({}, dict(cp_train_cells=0), "CellProfiler features are not of every training cells"),
])
def test_a_run_of_other_settings_is_refused_naming_what_differs(tmp_path, change, args, words):
    run = _demo_run(tmp_path / "run", **change)
    with pytest.raises(SystemExit) as e:
        spread._reused_run(run, _args(**args))
    assert words in str(e.value) and str(e.value).startswith(f"--reuse-run {run}")


def test_an_unfinished_run_is_refused_naming_the_missing_file(tmp_path):
    run = _demo_run(tmp_path / "run")
    os.remove(os.path.join(run, "rf", "cells_test.csv"))
    with pytest.raises(SystemExit, match="not a finished demo run .*cells_test.csv is missing"):
        spread._reused_run(run, _args())
