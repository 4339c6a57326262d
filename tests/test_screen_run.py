"""A whole screen (analysis/classify_screen.py on many micrographs): chunks kept as they finish, a run
killed with SIGKILL at a random point and started again ends with the tables of an uninterrupted
run, corrupt chunk files are redone, a changed set-up is refused, one writer per output folder,
no temporaries left, and the same tables on a real two-worker Dask cluster as in one process.
"""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch

from _bundles import make_bundle
from _dask_cluster import dask_cluster
from _data_helpers import REPO_ROOT, tiny_fields
from deepyeast.analysis.classify_screen import CallRules, ClassifySettings, classify_screen
from deepyeast.utils.run_context import RunContext
from deepyeast.analysis.screen_run import STEPS, chunk_path, work_folder
from deepyeast.engine.inference import InferenceSettings

SCRIPT = os.path.join(REPO_ROOT, "analysis", "classify_screen.py")
TABLES = ("cells.csv", "proteins.csv", "images.csv")
N_MICROGRAPHS = 12
QUIET = RunContext(progress=False)
N_CHUNKS = 6  # of 2 micrographs: the chunk size is part of the run (it sets the network's batches)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    return make_bundle(str(tmp / "model"), str(tmp))[0]


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """12 distinct micrographs (the tiny screen's 3 saved fields, each turned by 0-270 degrees), 6 proteins
    of 2 fields each; returns the images table's path."""
    fields = tiny_fields(tmp_path_factory)
    d = tmp_path_factory.mktemp("screen")
    lines = ["image,plate,protein"]
    for i in range(N_MICROGRAPHS):
        image = np.rot90(fields[i % len(fields)], k=i // len(fields), axes=(1, 2))
        tifffile.imwrite(d / f"field{i:02d}.tif", np.ascontiguousarray(image))
        lines.append(f"field{i:02d}.tif,1,{i // 2:03d}000000")
    (d / "images.csv").write_text("\n".join(lines) + "\n")
    return d / "images.csv"


def _tables(out):
    return {name: (out / name).read_text() for name in TABLES}


@pytest.fixture(scope="module")
def reference(bundle, screen, tmp_path_factory):
    """The uninterrupted run in this process (chunks of 2 micrographs): (output folder, summary)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    s = classify_screen(bundle, str(screen), str(out), ClassifySettings(n_resamples=50, chunk=2), QUIET)
    assert s["reused_micrographs"] == 0 and s["run"]["chunks"] == N_MICROGRAPHS // 2
    assert s["n_images"] == N_MICROGRAPHS and s["n_cells"] > 50
    return out, s


def test_the_summary_says_where_the_time_went(reference):
    """summary.json's run record: the chunks' wall time and each step's time summed over the chunks this run
    computed (every step timed; the network, segmentation and crops took time, nothing negative)."""
    run = reference[1]["run"]
    assert run["computed_micrographs"] == N_MICROGRAPHS
    assert list(run["task_seconds"]) == list(STEPS)
    steps = run["task_seconds"]
    assert all(v >= 0 for v in steps.values()) and steps["fp32_comparison"] == 0  # no --compare-fp32
    assert min(steps["network"], steps["read_and_segment"], steps["crops"]) > 0
    # one process, one task at a time: the steps fit inside the chunks' phase, which fits inside the run
    assert sum(steps.values()) <= run["seconds"] and run["tables_seconds"] > 0


def _command(bundle, screen, out, *extra):
    return [sys.executable, SCRIPT, "--model", bundle, "--images", str(screen), "--out", str(out), "--chunk", "2",
            "--scheduler", "none", "--resamples", "50", *extra]


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]),
                DEEPYEAST_PROGRESS="off")


def _leftovers(parent, name="out"):
    """What a run leaves beside its output besides the output: temporaries, work folder, lock file."""
    return sorted(p.name for p in parent.iterdir() if p.name != name and p.name.startswith((f".{name}.", f"{name}.")))


@pytest.mark.slow
def test_kill_9_at_a_random_point_then_the_same_command_finishes_with_the_same_tables(bundle, screen, reference,
                                                                                       tmp_path):
    out = tmp_path / "out"
    work = work_folder(out)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kill_after = rng.randrange(1, N_CHUNKS // 2 + 1)  # chunks finished before the kill
    print(f"kill -9 after {kill_after} of {N_CHUNKS} chunks (seed {seed})")
    first = subprocess.Popen(_command(bundle, screen, out), cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not os.path.exists(chunk_path(work, kill_after - 1)):
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.2))  # somewhere inside the next chunk
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert not out.exists()
    done = sorted(n for n in os.listdir(work) if n.startswith("chunk-"))
    assert len(done) >= kill_after
    # a corrupt chunk file (bytes flipped in its middle) is redone, never merged
    victim = chunk_path(work, 0)
    data = bytearray(open(victim, "rb").read())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    open(victim, "wb").write(bytes(data))
    r = subprocess.run(_command(bundle, screen, out), cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "chunk-000000.npz: unreadable chunk file" in r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["reused_micrographs"] == 2 * (len(done) - 1)
    assert s["run"]["computed_micrographs"] == N_MICROGRAPHS - s["reused_micrographs"]
    ref_out, _ = reference
    assert _tables(out) == _tables(ref_out)
    assert _leftovers(tmp_path) == []


def test_a_second_writer_of_the_same_output_is_refused_naming_the_first(bundle, screen, tmp_path):
    from deepyeast.utils.io import output_lock

    out = tmp_path / "out"
    with output_lock(out):  # this process is the first writer
        r = subprocess.run(_command(bundle, screen, out), cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
    assert r.returncode == 3 and f"(pid {os.getpid()}) is writing it now" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and not out.exists() and not os.path.exists(work_folder(out))


def test_a_changed_setup_is_refused_and_call_settings_may_change(bundle, screen, tmp_path):
    out = tmp_path / "out"
    work = work_folder(out)
    os.makedirs(work)
    # a work folder left by a run with other segmentation parameters
    from deepyeast.analysis import screen_run
    from deepyeast.data.segment_cells import CellFinding, SegmentParams
    from deepyeast.model import read_bundle

    b = read_bundle(bundle)
    old = screen_run.ChunkSettings(model=os.path.abspath(bundle), finding=CellFinding(SegmentParams(min_area=160)), chunk=2)
    screen_run.prepare_work(work, screen_run.fingerprint_parts(b, str(screen), old), restart=False)
    r = subprocess.run(_command(bundle, screen, out), cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "holds an unfinished run with another setting params" in r.stderr, r.stderr
    assert not out.exists()
    # --restart discards it; settings of the protein calls only do not touch the chunks
    new = screen_run.ChunkSettings(model=os.path.abspath(bundle), chunk=2)
    parts = screen_run.fingerprint_parts(b, str(screen), new)
    assert parts["settings"] != screen_run.fingerprint_parts(b, str(screen), old)["settings"]
    s = classify_screen(bundle, str(screen), str(out),
                        ClassifySettings(n_resamples=50, chunk=2, restart=True, rules=CallRules(min_cells=3)), QUIET)
    assert s["reused_micrographs"] == 0 and not os.path.exists(work)


@pytest.mark.slow
def test_a_two_worker_cluster_gives_the_same_tables(bundle, screen, reference, tmp_path):
    ref_out, ref = reference
    with dask_cluster(2) as address:
        out = tmp_path / "out"
        s = classify_screen(bundle, str(screen), str(out), ClassifySettings(n_resamples=50, chunk=2),
                            QUIET.with_(scheduler=address))
    assert _tables(out) == _tables(ref_out)
    pids = s["run"]["task_pids"]
    assert pids and os.getpid() not in pids  # the chunks ran in the worker processes
    assert ref["run"]["task_pids"] == [os.getpid()]
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.not_applicable(reason="needs a CUDA GPU; none is lent here, so --gpu on Dask workers is unmeasured")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_the_network_on_a_gpu_in_two_dask_workers_gives_the_cpu_calls(bundle, screen, reference, tmp_path):
    ref_out, _ = reference
    with dask_cluster(2) as address:
        out = tmp_path / "out"
        s = classify_screen(bundle, str(screen), str(out),
                            ClassifySettings(inference=InferenceSettings(device="cuda:0"), n_resamples=50, chunk=2),
                            QUIET.with_(scheduler=address))
    assert s["settings"]["device"] == "cuda:0" and os.getpid() not in s["run"]["task_pids"]
    with open(out / "cells.csv", newline="") as f:
        got = list(csv.DictReader(f))
    with open(ref_out / "cells.csv", newline="") as f:
        want = list(csv.DictReader(f))
    assert [(r["image"], r["cell"]) for r in got] == [(r["image"], r["cell"]) for r in want]
    k = sum(name.startswith("prob_") for name in got[0])
    for g, w in zip(got, want):
        np.testing.assert_allclose([float(g[f"prob_{j}"]) for j in range(k)],
                                   [float(w[f"prob_{j}"]) for j in range(k)], atol=1e-4)


def test_images_table_holds_each_micrographs_qc(screen, reference):
    from scipy.ndimage import laplace

    out, s = reference
    with open(out / "images.csv", newline="") as f:
        images = list(csv.DictReader(f))
    with open(out / "cells.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    assert list(images[0]) == ["image", "plate", "well", "protein", "mask", "n_cells", "focus", "saturated",
                               "background_marker", "background_protein", "qc_flags", "n_ood"]
    for row in images:
        assert int(row["n_cells"]) == sum(c["image"] == row["image"] for c in cells)
        micro = tifffile.imread(screen.parent / row["image"])
        assert float(row["focus"]) == pytest.approx(np.var(laplace(micro[0].astype(np.float32))), rel=1e-5)
        assert float(row["saturated"]) == pytest.approx(np.mean((micro[0] == 255) | (micro[1] == 255)), abs=1e-6)
        assert 0 <= float(row["background_marker"]) < np.median(micro[0][micro[0] > np.median(micro[0])]) + 1
    assert 'id="qc"' in (out / "report.html").read_text(encoding="utf-8")


def test_a_chunk_task_hands_the_net_only_padded_batch_sizes(bundle, screen, net_batches):
    """Each chunk's cells end in a partial batch of a size of their own; the chunk task (what every Dask
    worker runs, through the bundle's Predictor) runs it padded to one of a few sizes, so a worker's
    memory stays flat over thousands of chunks (issue 21; tests/test_inference.py)."""
    from deepyeast.analysis.classify_screen import read_screen_rows
    from deepyeast.analysis.screen_run import ChunkSettings, chunk_task, chunks_of
    from deepyeast.engine.inference import padded_batch
    from deepyeast.model import read_bundle

    def reject(where, error):
        raise error

    settings = ChunkSettings(model=bundle, chunk=2)
    batch = settings.inference.batch
    rows = read_screen_rows(str(screen), read_bundle(bundle).classes, reject)
    counts = []
    for item in chunks_of(rows, 2)[:3]:
        del net_batches[:]
        n = len(chunk_task(item, settings)["probs"])
        assert net_batches == [padded_batch(min(batch, n - s), batch) for s in range(0, n, batch)]
        counts.append(n)
    assert any(padded_batch(n % batch or batch, batch) != (n % batch or batch) for n in counts)  # padding ran


_HEAP_PROBE = r"""
import json, sys
import numpy as np
from deepyeast.engine import net
from deepyeast.utils.memory import status_mib

def anon():
    return status_mib("RssAnon")

net._retain_freed_memory()  # what building a Net does: freed blocks stay in the heap
blocks = [np.ones(1 << 17, np.uint8) for _ in range(2400)]  # 300 MiB in 128 KiB blocks
keep = blocks[::40]  # a few stay alive among them, as between a screen's passes
del blocks
before = anon()
done = net.release_freed_memory()
print(json.dumps([before, anon(), done]))
"""


def test_released_heap_pages_go_back_to_the_os():
    """The heap the engine keeps for speed is given back by release_freed_memory (in a fresh process:
    what this one's earlier tests left in its heap would decide the figures)."""
    proc = subprocess.run([sys.executable, "-c", _HEAP_PROBE], cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after, done = json.loads(proc.stdout.strip().splitlines()[-1])
    assert done is True
    assert before - after > 200, (before, after)  # ~290 MiB free in the heap before, given back after


def test_every_chunk_task_ends_by_asking_its_processs_heap_guard(bundle, screen, monkeypatch):
    """A chunk task (in this process or a Dask worker) ends by asking the process's HeapRelease, which gives
    the heap's free pages back when the process has grown, so a long run's memory does not grow with the
    chunks (issue 21) and a pass does not fault its activations in after every chunk (issue 24)."""
    from deepyeast.analysis import screen_run
    from deepyeast.analysis.classify_screen import read_screen_rows
    from deepyeast.model import read_bundle

    def reject(where, error):
        raise error

    real, calls, done = screen_run._HEAP.after_work, [], []

    def counted():
        calls.append(len(done))  # chunks finished before this call
        return real()

    monkeypatch.setattr(screen_run._HEAP, "after_work", counted)
    settings = screen_run.ChunkSettings(model=bundle, chunk=2)
    rows = read_screen_rows(str(screen), read_bundle(bundle).classes, reject)
    for item in screen_run.chunks_of(rows, 2)[:5]:
        screen_run.chunk_task(item, settings)
        done.append(item[0])
    assert calls == [0, 1, 2, 3, 4]  # once per chunk, inside the task


_GUARD_PROBE = r"""
import json
import numpy as np
from deepyeast.engine import net
from deepyeast.utils.memory import status_mib

net._retain_freed_memory()  # what building a Net does: freed blocks stay in the heap
guard = net.HeapRelease(margin_mib=100)
said = [guard.after_work()]  # the first unit's level: the reference
x = np.ones(50 << 20, np.uint8)
del x  # 50 MiB freed and kept: grown less than the margin
said.append(guard.after_work())
blocks = [np.ones(1 << 17, np.uint8) for _ in range(2400)]  # 300 MiB in 128 KiB blocks
keep = blocks[::40]  # a few stay alive among them
del blocks
before = status_mib("RssAnon")
said.append(guard.after_work())  # grown past the margin: released
after = status_mib("RssAnon")
said.append(guard.after_work())  # the level after a release: the new reference
said.append(guard.after_work())
print(json.dumps([said, before, after, guard.releases]))
"""


def test_the_heap_guard_releases_only_when_the_process_has_grown_past_its_margin():
    """HeapRelease (in a fresh process: this one's heap would decide the figures): a unit whose freed memory
    stays within the margin releases nothing; past the margin the free pages go back to the OS (RssAnon drops
    by most of the 300 MiB freed) and the next level is the new reference."""
    proc = subprocess.run([sys.executable, "-c", _GUARD_PROBE], cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said, before, after, releases = json.loads(proc.stdout.strip().splitlines()[-1])
    assert said == [False, False, True, False, False] and releases == 1
    assert before - after > 200, (before, after)


def test_a_chunk_task_runs_torch_and_opencv_on_one_thread_and_restores_them(bundle, screen, monkeypatch):
    """A LocalCluster has one worker per core: inside a chunk task the network (torch) and the segmentation
    (OpenCV) each use one thread, not one per core in every worker; the caller's settings come back after."""
    import cv2

    from deepyeast.analysis import screen_run
    from deepyeast.analysis.classify_screen import read_screen_rows
    from deepyeast.model import read_bundle

    def reject(where, error):
        raise error

    real, seen = screen_run.row_cells, []

    def spy(*args, **kw):
        seen.append((torch.get_num_threads(), cv2.getNumThreads()))
        return real(*args, **kw)

    monkeypatch.setattr(screen_run, "row_cells", spy)
    rows = read_screen_rows(str(screen), read_bundle(bundle).classes, reject)
    torch_before, cv_before = torch.get_num_threads(), cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        screen_run.chunk_task(screen_run.chunks_of(rows, 2)[0], screen_run.ChunkSettings(model=bundle, chunk=2))
        assert seen == [(1, 1), (1, 1)]
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (torch_before, 3)
    finally:
        cv2.setNumThreads(cv_before)
