"""bench/bench_engine.py --against REF: the engine of an older commit is exported whole (with the step scripts that
bench/bench_screen_run.py --against runs) and run as it was."""

import os
import re
import subprocess

from bench import bench_engine as be


def test_a_commit_is_exported_with_its_engine_and_models_and_reused(tmp_path):
    path, sha, date = be.export_ref("HEAD", str(tmp_path))
    assert re.fullmatch(r"[0-9a-f]{40}", sha) and re.fullmatch(r"\d{4}-\d\d-\d\d", date)
    for name in ("deepyeast/engine/net.py", "models/deepyeast/train_val.prototxt", "analysis/classify_screen.py"):
        want = subprocess.run(["git", "-C", be.REPO, "show", f"{sha}:{name}"], capture_output=True, check=True).stdout
        with open(os.path.join(path, name), "rb") as f:
            assert f.read() == want, name
    os.remove(os.path.join(path, "deepyeast", "engine", "net.py"))
    assert be.export_ref(sha, str(tmp_path))[0] == path  # already there: reused, not exported again
    assert not os.path.exists(os.path.join(path, "deepyeast", "engine", "net.py"))
    # an export of fewer parts (an older bench's) is made again, not failed over (os.replace onto a full folder)
    subprocess.run(["rm", "-rf", os.path.join(path, "analysis")], check=True)
    assert be.export_ref(sha, str(tmp_path))[0] == path
    assert os.path.exists(os.path.join(path, "analysis", "classify_screen.py"))
    assert os.path.exists(os.path.join(path, "deepyeast", "engine", "net.py"))
    # the whole tree, for make (bench/bench_demo.py --against)
    whole = be.export_ref(sha, str(tmp_path), parts=())[0]
    assert whole != path and os.path.exists(os.path.join(whole, "Makefile"))
    assert os.path.exists(os.path.join(whole, "mk", "demo.mk"))


def test_a_timed_process_reports_its_own_peak_memory_not_the_bench_process_it_was_forked_from():
    """Linux carries a child's ru_maxrss over exec from the forked copy of its parent (the bench, holding GEMM
    buffers of gigabytes); the timed process reports its own high-water mark instead."""
    import sys

    import numpy as np

    held = np.ones(96 * 2 ** 20)  # 768 MiB resident in this (the parent) process
    env = dict(os.environ, PYTHONPATH=be.REPO)
    res = subprocess.run([sys.executable, "-c", be._PEAK_REPORTING_MAIN, "--help"], cwd=be.REPO, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0 and "time" in res.stdout  # deepyeast's own help: the module ran as the command
    assert 0 < be.peak_of(res.stderr) < 500 < held.nbytes / 2 ** 20
    assert be.peak_of("no such line") == 0.0
