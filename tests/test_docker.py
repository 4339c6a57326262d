"""The Docker image, built and run: `make docker`, then real Caffe, pycaffe, R and the pipeline inside it.

The image is built with `make docker` (Docker where an engine answers; else podman or
buildah, as here) and each check runs a command in it the way a plain `docker run`
does: no --privileged and no capability beyond Docker's default set, so no
CAP_SYS_ADMIN (checked inside: `unshare` is refused).  With podman/buildah the
command runs in a `buildah from` container (`buildah run --isolation chroot`).

Where no engine can build (no docker engine, no podman/buildah) the tests skip with
the reason; in CI (CI=true) that is a failure: `make test` installs podman, buildah
and debootstrap as root on Debian.  Cold build (base images from debootstrap, every
layer) about 10 minutes on 2 cores; cached, a few seconds.  Also here, marked `caffe`
rather than `docker`: the image's way of running Caffe (the root's own dynamic loader)
checked against the host's (chroot) on the host's Caffe root.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from _data_helpers import REPO_ROOT
from _requirements import in_ci, need, reason
from deepyeast.caffe import root as caffe_root

IMAGE = os.environ.get("DEEPYEAST_TEST_IMAGE", "deepyeast")
# Docker's default capabilities (docker run without --cap-add or --privileged), as a CapEff mask:
# CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT
# MKNOD AUDIT_WRITE SETFCAP
DOCKER_DEFAULT_CAPS = 0xa80425fb
# buildah run's default set lacks these three of Docker's
BUILDAH_CAP_ADD = "CAP_MKNOD,CAP_NET_RAW,CAP_AUDIT_WRITE"
CAP_SYS_ADMIN = 21
BUILD_TIMEOUT = 40 * 60


def _docker_engine_answers():
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _unavailable(reason):
    if in_ci():  # CI=1 (.ci/run), true, yes...: the image must be built there
        pytest.fail(f"CI must build and test the Docker image, but {reason}")
    pytest.skip(reason)


class Runner:
    """Runs shell commands in the built image with Docker's default privileges; /out is a host folder."""

    def __init__(self, engine, out):
        self.engine = engine
        self.out = str(out)
        self.container = None
        if engine == "buildah":
            name = f"deepyeast-test-{uuid.uuid4().hex[:8]}"
            subprocess.run(["buildah", "from", "--pull=false", "--name", name, IMAGE], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            self.container = name

    def run(self, script, timeout=900):
        """Run ``sh -c script`` in the image (working folder /opt/deepyeast); returns CompletedProcess."""
        if self.engine == "docker":
            cmd = ["docker", "run", "--rm", "-v", f"{self.out}:/out", IMAGE, "sh", "-c", script]
        else:
            cmd = ["buildah", "run", "--isolation", "chroot", "--cap-add", BUILDAH_CAP_ADD,
                   "-v", f"{self.out}:/out", self.container, "--", "sh", "-c", script]
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)

    def close(self):
        if self.container:
            subprocess.run(["buildah", "rm", self.container], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def image():
    """`make docker` (as a user runs it); returns the engine that built it."""
    if _docker_engine_answers():
        engine = "docker"
    elif shutil.which("podman") and shutil.which("buildah"):
        engine = "buildah"
    else:
        _unavailable("no Docker engine answers and podman/buildah are not installed "
                     "(make test installs them as root on Debian: system-packages.txt, group docker)")
    start = time.monotonic()
    env = dict(os.environ, IMAGE=IMAGE)
    if engine == "buildah":
        env["DOCKER_ENGINE"] = "podman"
    proc = subprocess.run(["make", "--no-print-directory", "docker"], cwd=REPO_ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
    if proc.returncode != 0 and "making it with debootstrap needs root" in proc.stdout:
        _unavailable(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-6000:]
    sys.stderr.write(f"\nmake docker: {time.monotonic() - start:.0f} s; {proc.stdout.strip().splitlines()[-1]}\n")
    return engine


@pytest.fixture(scope="module")
def box(image, tmp_path_factory):
    runner = Runner(image, tmp_path_factory.mktemp("docker_out"))
    yield runner
    runner.close()


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def _junit_counts(path):
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}


@pytest.mark.docker
@pytest.mark.slow
def test_real_caffe_runs_in_image_without_privileges(box):
    out = _ok(box.run("grep CapEff /proc/self/status; "
                      "if unshare --mount true 2>/dev/null; then echo UNSHARE=allowed; else echo UNSHARE=refused; fi; "
                      "bin/caffe --version && bin/caffe-python -c 'import caffe, sys; print(\"pycaffe\", sys.version)' "
                      "&& scripts/caffe_packages.sh check /opt/caffe-root"))
    cap_eff = int(next(line for line in out.splitlines() if line.startswith("CapEff")).split()[1], 16)
    assert not cap_eff & (1 << CAP_SYS_ADMIN), out
    if box.engine == "buildah":
        assert cap_eff == DOCKER_DEFAULT_CAPS, hex(cap_eff)
    assert "UNSHARE=refused" in out, out
    assert "caffe version 1.0.0" in out, out
    assert "pycaffe 3.9." in out, out
    assert "exactly the" in out and "packages of caffe-packages.txt" in out, out


PARITY_SCRIPT = """
import json, os, pathlib, sys
import numpy as np, torch
sys.path.insert(0, "tests")
import _caffe_parity as p
out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
deploy = os.path.abspath(os.path.join("models", "deepyeast", "deploy.prototxt"))
net = p.Net(deploy, phase="TEST", seed=3)
p.randomize(net, 7)
net.save_caffemodel(out / "w.caffemodel")
x = np.random.default_rng(0).normal(0, 40, size=(4, 2, 64, 64)).astype(np.float32)
ref = p.run_caffe(out, deploy, out / "w.caffemodel", "TEST", inputs={"data": x})
ours = p.Net(deploy, phase="TEST", seed=0)
ours.load_caffemodel(out / "w.caffemodel")
with torch.no_grad():
    blobs = {k: v.numpy() for k, v in ours(data=x).items()}
json.dump({"prob_max_abs": float(np.abs(blobs["prob"] - ref["fwd0/prob"]).max()),
           "blob_rel_max": {n: p.rel_max(blobs[n], ref["fwd0/" + n]) for n in blobs},
           "mode": p.caffe_root.exec_mode()}, open(out / "parity.json", "w"))
"""


@pytest.mark.docker
@pytest.mark.slow
def test_pycaffe_in_image_matches_our_engine_on_deploy_net(box):
    script = os.path.join(box.out, "parity.py")
    with open(script, "w") as f:
        f.write(PARITY_SCRIPT)
    _ok(box.run("python /out/parity.py /out/parity"))
    result = json.load(open(os.path.join(box.out, "parity", "parity.json")))
    assert result["mode"] == "loader", result
    assert result["prob_max_abs"] <= 1e-5, result
    assert max(result["blob_rel_max"].values()) <= 1e-4, result


@pytest.mark.docker
@pytest.mark.slow
def test_real_caffe_trains_and_r_forest_runs_in_image(box):
    """Real `caffe train` on models/deepyeast/train_val.prototxt (a small LMDB), and R's randomForest.

    The image's own tests, which must pass there, not skip.
    """
    tests = ["tests/test_real_caffe.py::test_real_caffe_trains_our_net_on_our_lmdb_and_loss_falls",
             "tests/test_real_caffe.py::test_our_reader_loads_caffemodel_and_solverstate_written_by_real_caffe",
             "tests/test_rforest.py::test_grid_search_scores_every_point_and_best_forest_is_reproducible"]
    proc = box.run("python -m pytest -q -p no:cacheprovider --junitxml=/out/junit.xml " + " ".join(tests),
                   timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:]
    counts = _junit_counts(os.path.join(box.out, "junit.xml"))
    assert counts == {"tests": len(tests), "failures": 0, "errors": 0, "skipped": 0}, (counts, proc.stdout[-3000:])


@pytest.mark.docker
@pytest.mark.slow
def test_demo_pipeline_tiny_in_image_ends_in_report(box):
    from _pipeline_checks import TINY_SCHEDULE, check_report

    proc = box.run(f"make --no-print-directory pipeline RUN=/out/run SCREEN=synthetic SIZE=tiny "
                   f"SCHEDULE='{TINY_SCHEDULE}' GRID=small PRECISION=bf16", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "apt-get" not in proc.stdout and "pip install" not in proc.stdout, proc.stdout[-3000:]
    check_report(os.path.join(box.out, "run"))


# ---------------------------------------------------------------- the image's way of running Caffe, on the host

NATIVE = "Caffe is installed on the system itself (DEEPYEAST_CAFFE_ROOT=/, as in the image): no root to compare modes in"


def _host_root_reason():
    if not os.path.isfile(os.path.join(caffe_root.caffe_root_path(), "usr", "bin", "caffe")):
        return reason("caffe", f"no Caffe root at {caffe_root.caffe_root_path()}: run `make caffe`")
    if caffe_root.is_native():
        return NATIVE
    return ""


MAPS_SCRIPT = ("import caffe, numpy, google.protobuf\n"
               "print('\\n'.join(sorted({l.split()[-1] for l in open('/proc/self/maps') if '.so' in l})))\n")


@pytest.mark.caffe
@pytest.mark.not_applicable(reason=NATIVE)
@pytest.mark.skipif(bool(_host_root_reason()), reason=_host_root_reason() or "-")
def test_loader_mode_loads_every_library_from_the_root(monkeypatch):
    """caffe and pycaffe started by the root's loader map no shared library of the calling system."""
    monkeypatch.setenv("DEEPYEAST_CAFFE_EXEC", "loader")
    root = os.path.realpath(caffe_root.caffe_root_path())
    out = caffe_root.run_in_root(["python3", "-c", MAPS_SCRIPT]).stdout.split()
    libs = [p for p in out if p.startswith("/")]
    assert any("/caffe/_caffe." in p for p in libs), libs
    # libblas.so.3 is the root's alternatives choice (OpenBLAS), not the calling system's
    assert any(p.endswith("/openblas-pthread/libblas.so.3") for p in libs), libs
    outside = [p for p in libs if not os.path.realpath(p).startswith(root + os.sep)]
    assert not outside, outside
    version = caffe_root.run_in_root(["caffe", "--version"]).stdout
    assert "caffe version 1.0.0" in version


@pytest.mark.caffe
@pytest.mark.not_applicable(reason=NATIVE)
@pytest.mark.skipif(bool(_host_root_reason()), reason=_host_root_reason() or "-")
def test_loader_and_chroot_modes_give_identical_pycaffe_outputs(tmp_path, monkeypatch):
    """The same deploy-net forward through both ways of running the root: bit for bit the same."""
    if not caffe_root._can_unshare():
        need("namespaces", "the chroot mode needs root with CAP_SYS_ADMIN")
    import _caffe_parity as p

    deploy = os.path.join(REPO_ROOT, "models", "deepyeast", "deploy.prototxt")
    net = p.Net(deploy, phase="TEST", seed=3)
    p.randomize(net, 7)
    net.save_caffemodel(tmp_path / "w.caffemodel")
    x = np.random.default_rng(1).normal(0, 40, size=(2, 2, 64, 64)).astype(np.float32)
    outputs = {}
    for mode in ("chroot", "loader"):
        monkeypatch.setenv("DEEPYEAST_CAFFE_EXEC", mode)
        d = tmp_path / mode
        d.mkdir()
        outputs[mode] = p.run_caffe(d, deploy, tmp_path / "w.caffemodel", "TEST", inputs={"data": x})
    assert outputs["chroot"].keys() == outputs["loader"].keys()
    for key, value in outputs["chroot"].items():
        assert np.array_equal(value, outputs["loader"][key]), key


@pytest.mark.not_applicable(reason=NATIVE)
def test_bad_exec_mode_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("DEEPYEAST_CAFFE_EXEC", "sandbox")
    if caffe_root.is_native():
        pytest.skip(NATIVE)
    with pytest.raises(ValueError, match="DEEPYEAST_CAFFE_EXEC=sandbox: use one of chroot, loader"):
        caffe_root.exec_mode()
