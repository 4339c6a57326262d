"""bench/gpu_check.sh (issue 15, item 5): its CPU side, since no GPU is lent to CI.

The dry run (``--device cpu``) goes through every stage the GPU run does -- parity tests,
synthetic LMDBs, GPU-resident data loading, the paper's schedule in two precisions with the
projection, deploy inference -- and writes the results file; a failing stage is recorded
and the stages before it stay written.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "bench", "gpu_check.sh")
DRY = ["--device", "cpu", "--iterations", "3", "--batch", "8", "--train-cells", "300", "--val-cells", "200",
       "--test-iter", "2", "--infer-batch", "8", "--stage-seconds", "60"]


def run(args, env=None, timeout=60):
    return subprocess.run(["bash", SCRIPT] + list(args), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("args,message", [
    (["--device", "tpu"], "--device must be cpu or cuda"),
    (["--iterations", "0"], "--iterations must be >= 1"),
    (["--device", "cpu", "--precisions", "tf32"], "tf32 needs a CUDA device"),
    (["--precisions", "fp8"], "unknown fp8"),
    (["--batch", "100", "--train-cells", "50"], "at least one batch"),
])
def test_bad_arguments_are_refused_before_any_work(args, message, tmp_path):
    res = run(args + ["--results", str(tmp_path / "r.md")])
    assert res.returncode == 2 and message in res.stderr
    assert not (tmp_path / "r.md").exists()


def test_missing_packages_are_named_not_installed(tmp_path):
    bare = tmp_path / "bare-python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")  # no site-packages
    bare.chmod(0o755)
    res = run(["--device", "cpu"], env={"PYTHON": str(bare)})
    assert res.returncode == 2
    assert "lacks: torch numpy lmdb google.protobuf pytest" in res.stderr and "installs nothing" in res.stderr


@pytest.mark.slow
def test_cpu_dry_run_writes_every_stage(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other section\n\nkept\n")
    res = run(DRY + ["--results", str(results), "--workdir", str(tmp_path / "work")], timeout=1800)
    assert res.returncode == 0, res.stderr[-4000:]
    text = results.read_text()
    assert "## Other section\n\nkept" in text
    section = text.split("## GPU check (bench/gpu_check.sh)")[1]
    assert "not GPU figures. The GPU figures are not measured" in section
    assert "Parity on `cpu`" in section and " passed" in section and "failed" not in section
    assert "whole LMDB resident on the device | yes" in section
    rows = [ln for ln in section.splitlines() if ln.startswith("| fp32 |") or ln.startswith("| bf16 |")]
    assert len(rows) == 4  # training fp32, bf16; inference fp32, bf16
    training = [ln for ln in rows if ln.count("|") == 10]
    assert [r.split("|")[1].strip() for r in training] == ["fp32", "bf16"]
    assert all(r.split("|")[2].strip() == "3" and "min" in r for r in training)
    assert "Whole check:" in section


def test_a_failing_stage_keeps_the_earlier_ones(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(REPO, "bench"))
    try:
        import bench_gpu
    finally:
        sys.path.pop(0)

    def broken(*_args):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(bench_gpu, "inference_stage", broken)
    results = tmp_path / "RESULTS.md"
    rc = bench_gpu.main(DRY + ["--precisions", "fp32", "--skip-parity", "--results", str(results),
                               "--workdir", str(tmp_path / "work")])
    assert rc == 1
    section = results.read_text().split("## GPU check (bench/gpu_check.sh)")[1]
    assert "| fp32 | 3 |" in section and "Data layer: batch of 8" in section
    assert "stage failed: inference" in section and "out of memory (simulated)" in section
