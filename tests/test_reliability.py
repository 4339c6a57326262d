"""Faults a user meets, each as a class (issue 10): what happens must be one clear line and an exit
code, never a signal, a traceback, a silent wrong result or code run from a data file.

Everything here is real: subprocesses of our commands, real LMDBs (truncated, random bytes), a
real ``kill -9`` in the middle of a write, two writers at once, a pickle that would create a file
if it were ever loaded, a file-size limit (``ulimit -f``) and paths under regular files.  The
docs/reference/reliability.md ("What is checked") lists these cases.
"""

import glob
import hashlib
import json
import os
import pickle
import re
import shutil
import textwrap
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import compute_mean, read_mean_binaryproto
from deepyeast.caffe.lmdb import iter_datum_lmdb, write_datum_lmdb
from deepyeast.caffe.prototxt import read_prototxt

from _solver_nets import CONVEX_NET, make_init_weights, make_lmdb, solver_param, write_net, write_solver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run(args, timeout=300, shell_prefix=None, **kw):
    """Run a command (list) to completion; ``shell_prefix`` (e.g. ``ulimit -f 64``) runs it under bash."""
    if shell_prefix:
        import shlex
        args = ["bash", "-c", f"{shell_prefix}; exec " + " ".join(shlex.quote(str(a)) for a in args)]
    return subprocess.run([str(a) for a in args], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def deepyeast(*args, **kw):
    return run([sys.executable, "-m", "deepyeast", *args], **kw)


def step(script, *args, **kw):
    return run([sys.executable, os.path.join(REPO, script), *args], **kw)


def one_error_line(res, prog, code, *fragments):
    """The process exited with ``code`` and said why in one ``prog: error:`` line naming ``fragments``;
    no traceback, no signal."""
    out = res.stdout + res.stderr
    assert res.returncode == code, f"exit {res.returncode}, expected {code}:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in res.stderr.splitlines() if f"{prog}: error:" in line]
    assert len(errors) == 1, res.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def digests(folder):
    """relative path -> sha256 of every regular file under ``folder`` (hidden ones included)."""
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def assert_bundle_consistent(bundle):
    """Every manifest describes the LMDB on disk, and the mean is the mean of the train LMDB on disk."""
    for manifest_path in glob.glob(os.path.join(bundle, "*_manifest.json")):
        with open(manifest_path) as f:
            manifest = json.load(f)
        with open(os.path.join(bundle, manifest["lmdb"], "data.mdb"), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == manifest["data_mdb_sha256"], manifest_path
    mean = compute_mean(img for _, img, _ in iter_datum_lmdb(os.path.join(bundle, "train_lmdb")))
    np.testing.assert_allclose(read_mean_binaryproto(os.path.join(bundle, "mean.binaryproto")), mean, rtol=1e-6)


# ============================================================================ a small training setup

@pytest.fixture
def convex(tmp_path):
    """A convex net on a 40-record LMDB, its init weights and a solver writing snapshots under tmp_path."""
    lmdb = make_lmdb(str(tmp_path / "lmdb"))
    net = write_net(str(tmp_path / "net.prototxt"), CONVEX_NET, lmdb)
    init = make_init_weights(str(tmp_path / "init.caffemodel"))
    return tmp_path, lmdb, net, init


def _solver(d, net, name="solver", **fields):
    fields.setdefault("max_iter", 10)
    fields.setdefault("snapshot", 5)
    fields.setdefault("test_interval", 5)
    return write_solver(str(d / f"{name}.prototxt"), solver_param(net, str(d / name / "m"), **fields))


# ============================================================================ item 2: divergence and NaN

NAN_TEST_NET = CONVEX_NET.replace(
    # the TEST Data layer scales pixels by 1e38: its scores overflow to inf, its loss is NaN;
    # the TRAIN net stays finite
    'include {{ phase: TEST }}\n  transform_param {{ scale: 0.00390625 }}',
    'include {{ phase: TEST }}\n  transform_param {{ scale: 1e38 }}')


def test_nan_test_loss_stops_training_naming_the_last_finite_snapshot(tmp_path):
    assert NAN_TEST_NET != CONVEX_NET
    lmdb = make_lmdb(str(tmp_path / "lmdb"))
    net = write_net(str(tmp_path / "net.prototxt"), NAN_TEST_NET, lmdb)
    solver = _solver(tmp_path, net, max_iter=20, snapshot=5, test_interval=10, test_initialization=False)
    res = deepyeast("train", "-solver", solver, "-progress", "off")
    line = one_error_line(res, "deepyeast train", 3, "TEST net #0", "is nan at iteration 10",
                          "Last snapshot with finite losses:", "m_iter_5.solverstate")
    assert "renamed *.diverged" in line
    snaps = sorted(os.listdir(tmp_path / "solver"))
    # the iteration-10 snapshot (the weights whose TEST loss is NaN) can no longer be picked by anything
    assert "m_iter_10.solverstate" not in snaps and "m_iter_10.caffemodel" not in snaps
    assert "m_iter_10.solverstate.diverged" in snaps and "m_iter_5.solverstate" in snaps
    from deepyeast.engine.cli import latest_solverstate
    assert latest_solverstate(str(tmp_path / "solver" / "m")).endswith("m_iter_5.solverstate")


def test_snapshot_rules_never_choose_a_non_finite_loss(tmp_path):
    from deepyeast.engine.run_config import choose_snapshot
    from deepyeast.utils.io import InputError, StepFailed

    p = caffe_pb2.SolverParameter(snapshot_prefix=str(tmp_path / "m"), max_iter=30)
    write_solver(str(tmp_path / "s.prototxt"), p)
    for it in (10, 20, 30):
        (tmp_path / f"m_iter_{it}.caffemodel").write_bytes(b"x")
    test = "I0101 solver.cpp:1] Iteration {}, Testing net (#0)\nI0101 solver.cpp:2]     Test net output #0: loss = {}\n"
    # the NaN validation loss comes first: min() over (loss, iteration) pairs then returned it
    log = "I0101 solver.cpp:0] Solving x\n" + test.format(20, "-nan") + test.format(10, 0.9) + test.format(30, 0.5)
    (tmp_path / "train.log").write_text(log)
    chosen = choose_snapshot(str(tmp_path / "s.prototxt"), str(tmp_path / "train.log"), "val_loss")
    assert chosen.endswith("m_iter_10.caffemodel")  # 30 comes after the divergence at 20
    with pytest.raises(StepFailed, match="diverged"):
        choose_snapshot(str(tmp_path / "s.prototxt"), str(tmp_path / "train.log"), "final")
    # a later run that starts afresh replaces what the diverged one logged
    log += ("I0101 solver.cpp:0] Solving x\n" + "I0101 solver.cpp:3] Iteration 0 (0 iter/s, 0s/1 iters), loss = 2\n"
            + test.format(10, 0.7) + test.format(20, 0.4) + test.format(30, 0.6))
    (tmp_path / "train.log").write_text(log)
    assert choose_snapshot(str(tmp_path / "s.prototxt"), str(tmp_path / "train.log"), "val_loss").endswith(
        "m_iter_20.caffemodel")
    assert choose_snapshot(str(tmp_path / "s.prototxt"), str(tmp_path / "train.log"), "final").endswith(
        "m_iter_30.caffemodel")
    (tmp_path / "nan.log").write_text(test.format(10, "nan") + test.format(20, "inf"))
    with pytest.raises(InputError, match="no finite validation loss"):
        choose_snapshot(str(tmp_path / "s.prototxt"), str(tmp_path / "nan.log"), "val_loss")


# ============================================================================ item 3: no code from data files

def _evil_pickle(marker):
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling it creates ``marker``
    return pickle.dumps({"version": 1, "iter": 5, "payload": Evil()})


def test_crafted_pickle_beside_a_snapshot_is_never_loaded(convex):
    d, _, net, init = convex
    solver = _solver(d, net)
    assert deepyeast("train", "-solver", solver, "-weights", init, "-progress", "off").returncode == 0
    state = d / "solver" / "m_iter_5.solverstate"
    marker = d / "code_ran"
    evil = _evil_pickle(marker)
    pickle.loads(evil)  # the payload is real: loading it creates the marker
    assert marker.exists()
    marker.unlink()
    # an old-format engine state (what earlier versions wrote) holding that payload
    for path in glob.glob(str(d / "solver" / "m_iter_5.dystate*")):
        os.remove(path)
    (d / "solver" / "m_iter_5.dystate").write_bytes(evil)
    res = deepyeast("train", "-solver", solver, "-snapshot", state, "-progress", "off")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not marker.exists(), "the pickle beside the snapshot was loaded"
    assert "old pickle format, which is never loaded" in res.stderr and "data order restarts" in res.stderr
    assert "Restoring previous solver status" in res.stderr


def test_engine_state_holding_a_pickle_is_refused(convex):
    d, _, net, init = convex
    solver = _solver(d, net)
    assert deepyeast("train", "-solver", solver, "-weights", init, "-progress", "off").returncode == 0
    marker = d / "code_ran"
    # a .dystate.npz holding an object array: np.savez pickles it, and loading it with
    # allow_pickle=True would run the payload
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    evil = np.empty(1, dtype=object)
    evil[0] = Evil()
    path = d / "solver" / "m_iter_5.dystate.npz"
    with open(path, "wb") as f:
        np.savez(f, **{"state.json": np.frombuffer(b'{"format": "deepyeast.engine-state"}', np.uint8), "a0": evil})
    assert not marker.exists()
    res = deepyeast("train", "-solver", solver, "-snapshot", d / "solver" / "m_iter_5.solverstate",
                    "-progress", "off")
    one_error_line(res, "deepyeast train", 2, "m_iter_5.dystate.npz", "not an engine state")
    assert not marker.exists()
    # and a pickle under the new name is no engine state either
    path.write_bytes(_evil_pickle(marker))
    res = deepyeast("train", "-solver", solver, "-snapshot", d / "solver" / "m_iter_5.solverstate",
                    "-progress", "off")
    one_error_line(res, "deepyeast train", 2, "m_iter_5.dystate.npz")
    assert not marker.exists()


UNSAFE_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "cPickle.load",
    "cPickle.loads", "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "marshal.load",
    "marshal.loads", "shelve.open", "joblib.load", "torch.load", "torch.jit.load", "torch.package.PackageImporter",
    "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all", "pandas.read_pickle",
    "numpy.lib.format.read_array", "eval", "exec", "builtins.eval", "builtins.exec",
}
"""Dotted names (after resolving imports and aliases) of loaders that can run code from a file's content."""

UNSAFE_OTHER = re.compile(r"readRDS\(|\bunserialize\(|(?<![\w.])load\(")
"""The same in R and shell sources (regex: no parser here): R's readRDS, load and unserialize."""


def unsafe_loader_uses(source, filename="<source>"):
    """``lineno: text`` of each use in Python ``source`` of a loader of :data:`UNSAFE_CALLS` (called or passed
    along, under any alias: ``from pickle import loads as L``) or of ``allow_pickle`` set to anything but False."""
    import ast

    tree = ast.parse(source, filename)
    alias = {}  # local name -> dotted origin
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
    canon = {"np": "numpy", "pd": "pandas"}

    def dotted(node):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        head = alias.get(node.id, node.id)
        head = canon.get(head, head)
        return ".".join([head] + parts[::-1])

    hits = []
    lines = source.splitlines()
    for node in ast.walk(tree):
        name = dotted(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
        if name in UNSAFE_CALLS and not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)):
            hits.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module:
            hits += [node.lineno for a in node.names if f"{node.module}.{a.name}" in UNSAFE_CALLS]
        if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                hits.append(node.value.lineno)
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "allow_pickle" for t in targets) and not (
                    isinstance(node.value, ast.Constant) and node.value.value is False):
                hits.append(node.lineno)
    return [f"{n}: {lines[n - 1].strip()}" for n in sorted(set(hits))]


def test_the_unsafe_loader_scan_finds_every_form():
    """The scan is the AST's: aliases, from-imports, spaces and loaders passed as values are found."""
    found = unsafe_loader_uses(textwrap.dedent("""
        from pickle import loads
        from pickle import load as read_it
        import torch as T
        import numpy as np
        import yaml
        x = loads(b"")
        y = read_it(open("f", "rb"))
        m = T.jit.load("m.pt")
        a = np.load("a.npy", allow_pickle = True)
        allow_pickle = True
        kw = dict(allow_pickle=1)
        loader = T.load
        cfg = yaml.load(open("c"))
        eval("1")
        ok = np.load("a.npy", allow_pickle=False)
        also_ok = np.load("a.npy")
        text = "pickle.loads( in a string is no call"
    """))
    assert [f.split(":")[0] for f in found] == [str(n) for n in (2, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15)], found


def test_no_reader_of_user_files_can_run_code():
    """No loader that can execute code from a file is used anywhere in the package or the scripts."""
    hits = []
    for folder in ("deepyeast", "analysis", "data_prep", "bin", "scripts"):
        for base, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                path = os.path.join(base, name)
                if name.endswith(".py") or (folder == "bin" and open(path, "rb").read(64).startswith(b"#!")
                                            and b"python" in open(path, "rb").readline()):
                    with open(path, encoding="utf-8") as f:
                        hits += [f"{os.path.relpath(path, REPO)}:{h}" for h in unsafe_loader_uses(f.read(), path)]
                elif name.endswith((".R", ".sh")) or folder == "bin":
                    with open(path, encoding="utf-8", errors="replace") as f:
                        for no, line in enumerate(f, 1):
                            if UNSAFE_OTHER.search(line.split("#", 1)[0]):
                                hits.append(f"{os.path.relpath(path, REPO)}:{no}: {line.strip()}")
    assert not hits, "\n".join(hits)


# ============================================================================ item 4: stale resume

def _rewrite_lmdb(path, seed):
    shutil.rmtree(path)
    make_lmdb(path, seed=seed)


@pytest.mark.slow
def test_snapshot_auto_refuses_a_run_whose_data_or_net_changed(convex):
    d, lmdb, net, init = convex
    solver = _solver(d, net)
    assert deepyeast("train", "-solver", solver, "-progress", "off").returncode == 0
    # unchanged: auto resumes the finished run (nothing left to train) and succeeds
    res = deepyeast("train", "-solver", solver, "-snapshot", "auto", "-progress", "off")
    assert res.returncode == 0 and "Resuming from the newest snapshot" in res.stderr, res.stderr[-2000:]

    _rewrite_lmdb(lmdb, seed=5)  # the same path, other cells
    res = deepyeast("train", "-solver", solver, "-snapshot", "auto", "-progress", "off")
    one_error_line(res, "deepyeast train", 2, "-snapshot auto", "m_iter_10.solverstate",
                   "records of Data layer TRAIN/data", "-allow_changed")
    # told to: -allow_changed, or the snapshot named explicitly (as in Caffe, with a warning)
    assert deepyeast("train", "-solver", solver, "-snapshot", "auto", "-allow_changed",
                     "-progress", "off").returncode == 0
    res = deepyeast("train", "-solver", solver, "-snapshot", d / "solver" / "m_iter_5.solverstate",
                    "-progress", "off")
    assert res.returncode == 0 and "was trained on other inputs than this run" in res.stderr, res.stderr[-2000:]

    # a changed net (another learning-rate multiplier) is refused too
    solver2 = _solver(d, write_net(str(d / "net2.prototxt"), CONVEX_NET.replace("lr_mult: 2", "lr_mult: 3"), lmdb),
                      name="solver")
    res = deepyeast("train", "-solver", solver2, "-snapshot", "auto", "-progress", "off")
    one_error_line(res, "deepyeast train", 2, "the net prototxt")
    # a longer schedule of the same run resumes: max_iter is no part of the fingerprint
    longer = _solver(d, net, max_iter=15)
    res = deepyeast("train", "-solver", longer, "-snapshot", "auto", "-progress", "off")
    assert res.returncode == 0 and os.path.exists(d / "solver" / "m_iter_15.caffemodel"), res.stderr[-2000:]


def test_snapshot_auto_refuses_a_snapshot_without_a_record(convex):
    d, _, net, init = convex
    solver = _solver(d, net)
    assert deepyeast("train", "-solver", solver, "-progress", "off").returncode == 0
    for path in glob.glob(str(d / "solver" / "*.dystate.npz")):
        os.remove(path)  # as real Caffe leaves its snapshots
    res = deepyeast("train", "-solver", solver, "-snapshot", "auto", "-progress", "off")
    one_error_line(res, "deepyeast train", 2, "has no record of the net, solver and data")


# ============================================================================ item 5, 9: unwritable outputs

def test_unwritable_snapshot_prefix_fails_before_the_first_iteration(convex):
    d, _, net, _ = convex
    (d / "afile").write_text("x")
    solver = write_solver(str(d / "s.prototxt"), solver_param(net, str(d / "solver" / "m"), max_iter=10, snapshot=5))
    p = read_prototxt(solver, caffe_pb2.SolverParameter)
    p.snapshot_prefix = str(d / "afile" / "snaps" / "m")
    write_solver(solver, p)
    res = deepyeast("train", "-solver", solver, "-progress", "off")
    one_error_line(res, "deepyeast train", 2, "afile", "is a file, not a folder")
    assert "Iteration 0" not in res.stderr  # found before any work


def test_output_under_a_regular_file_is_one_line_before_work(tmp_path, tmp_path_factory):
    from _data_helpers import tiny_screen
    screen = tiny_screen(tmp_path_factory)
    (tmp_path / "afile").write_text("x")
    res = step("data_prep/make_lmdb.py", screen / "main", "--out", tmp_path / "afile" / "lmdb")
    one_error_line(res, "make_lmdb.py", 2, "afile", "is a file, not a folder")
    assert res.stderr.strip().count("\n") == 0  # the error line alone: refused before the first crop


def test_file_size_limit_is_one_line_and_keeps_the_earlier_bundle(tmp_path, tmp_path_factory):
    from _data_helpers import tiny_screen
    screen = tiny_screen(tmp_path_factory)
    out = tmp_path / "lmdb"
    assert step("data_prep/make_lmdb.py", screen / "main", "--out", out).returncode == 0
    before = digests(out)
    # 1 MiB per file: the train LMDB (~3 MiB) cannot be written (Python ignores SIGXFSZ: write gets EFBIG)
    res = step("data_prep/make_lmdb.py", screen / "main", "--out", out, "--seed", "3",
               shell_prefix="ulimit -f 1024")
    one_error_line(res, "make_lmdb.py", 3, "train_lmdb", "cannot write", "earlier outputs are intact")
    assert digests(out) == before
    assert not [n for n in os.listdir(tmp_path) if ".partial" in n]


def test_file_size_limit_while_extracting_features(convex):
    d, lmdb, net, init = convex
    big = d / "big_lmdb"
    rng = np.random.default_rng(0)
    write_datum_lmdb(str(big), [(f"plate01/c{i}-1-1-1.png", rng.integers(0, 255, (2, 4, 4), dtype=np.uint8), i % 3)
                                for i in range(4000)], shuffle=False)
    net_big = write_net(str(d / "big.prototxt"), CONVEX_NET, str(big))
    res = deepyeast("extract", "-model", net_big, "-weights", init, "-blobs", "data,ip", "-out", d / "feat",
                    shell_prefix="ulimit -f 64")
    one_error_line(res, "deepyeast extract", 3, "feat", "cannot write", "disk full or over the file-size limit")
    assert not os.path.exists(d / "feat")


# ============================================================================ item 6: corrupt storage files

@pytest.fixture
def extract_setup(convex):
    d, lmdb, net, init = convex
    return d, lmdb, net, init


def test_truncated_lmdb_is_an_error_not_sigbus(extract_setup):
    d, lmdb, net, init = extract_setup
    big = d / "trunc_lmdb"
    rng = np.random.default_rng(1)
    write_datum_lmdb(str(big), [(f"plate01/c{i}-1-1-1.png", rng.integers(0, 255, (2, 4, 4), dtype=np.uint8), i % 3)
                                for i in range(3000)], shuffle=False)
    data = big / "data.mdb"
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    net_t = write_net(str(d / "trunc.prototxt"), CONVEX_NET, str(big))
    for action in (["extract", "-model", net_t, "-weights", init, "-blobs", "ip", "-out", d / "f"],
                   ["test", "-model", net_t, "-weights", init, "-iterations", "2"]):
        res = deepyeast(*action)
        assert res.returncode != -signal.SIGBUS, "killed by SIGBUS"
        one_error_line(res, f"deepyeast {action[0]}", 2, str(data), "truncated")


@pytest.mark.slow
def test_random_bytes_and_empty_files_are_named(extract_setup):
    d, lmdb, net, init = extract_setup
    rng = np.random.default_rng(2)
    # an LMDB folder whose data.mdb is random bytes
    junk = d / "junk_lmdb"
    junk.mkdir()
    (junk / "data.mdb").write_bytes(rng.bytes(64 * 1024))
    net_j = write_net(str(d / "junk.prototxt"), CONVEX_NET, str(junk))
    one_error_line(deepyeast("test", "-model", net_j, "-weights", init), "deepyeast test", 2,
                   "junk_lmdb/data.mdb", "not an LMDB database")
    # a 0-byte .caffemodel (once accepted: the net ran on its random initial weights)
    (d / "empty.caffemodel").write_bytes(b"")
    one_error_line(deepyeast("test", "-model", net, "-weights", d / "empty.caffemodel"), "deepyeast test", 2,
                   "empty.caffemodel", "empty file")
    # weights of another net: no layer matches
    from deepyeast.caffe.blobs import write_caffemodel
    write_caffemodel(str(d / "other.caffemodel"), {"conv9": [np.zeros((2, 2), np.float32)]})
    one_error_line(deepyeast("test", "-model", net, "-weights", d / "other.caffemodel"), "deepyeast test", 2,
                   "other.caffemodel", "none of its layers")
    # random bytes as weights, as a mean image, as a solver state
    (d / "random.caffemodel").write_bytes(rng.bytes(5000))
    one_error_line(deepyeast("test", "-model", net, "-weights", d / "random.caffemodel"), "deepyeast test", 2,
                   "random.caffemodel")
    (d / "random.binaryproto").write_bytes(rng.bytes(5000))
    (d / "empty.binaryproto").write_bytes(b"")
    for mean in ("random.binaryproto", "empty.binaryproto"):
        with_mean = write_net(str(d / f"mean_{mean}.prototxt"), CONVEX_NET.replace(
            "transform_param {{ scale: 0.00390625 }}",
            f'transform_param {{{{ scale: 0.00390625 mean_file: "{d / mean}" }}}}'), lmdb)
        one_error_line(deepyeast("test", "-model", with_mean, "-weights", init), "deepyeast test", 2, mean)
    solver = _solver(d, net)
    (d / "empty.solverstate").write_bytes(b"")
    one_error_line(deepyeast("train", "-solver", solver, "-snapshot", d / "empty.solverstate"),
                   "deepyeast train", 2, "empty.solverstate", "empty file")
    # a binary file given as the solver or the net
    (d / "binary.prototxt").write_bytes(rng.bytes(3000))
    one_error_line(deepyeast("train", "-solver", d / "binary.prototxt"), "deepyeast train", 2,
                   "binary.prototxt", "not a text solver prototxt")
    one_error_line(deepyeast("test", "-model", d / "binary.prototxt", "-weights", init), "deepyeast test", 2,
                   "binary.prototxt", "not a text net prototxt")


# ============================================================================ item 7: multi-file outputs

def _big_archive(src, dest, copies):
    """An archive root of ``copies`` renamed copies of ``src``'s plates (proteins stay within splits)."""
    dest.mkdir()
    plates = sorted(p for p in os.listdir(src) if p.startswith("plate"))
    names = {}
    for k in range(copies):
        for plate in plates:
            new = f"plate{int(plate[5:]) + 100 * (k + 1):03d}"
            os.symlink(src / plate, dest / new)
            names[(k, plate)] = new
    for split in ("train", "val", "test"):
        lines = (src / f"HOwt_{split}.txt").read_text().splitlines()
        out = []
        for k in range(copies):
            for line in lines:
                rel, label = line.split()
                plate, rest = rel.split("/", 1)
                out.append(f"{names[(k, plate)]}/{rest} {label}\n")
        (dest / f"HOwt_{split}.txt").write_text("".join(out))
    return dest


def _newest(folder, name, since):
    for base, _, files in os.walk(folder):
        if name in files and os.path.getmtime(os.path.join(base, name)) >= since:
            return os.path.join(base, name)
    return None


def test_kill_9_during_make_lmdb_leaves_the_old_bundle_whole(tmp_path, tmp_path_factory):
    from _data_helpers import tiny_screen
    archive = _big_archive(tiny_screen(tmp_path_factory) / "main", tmp_path / "archive", copies=12)
    out = tmp_path / "work" / "lmdb"
    first = step("data_prep/make_lmdb.py", archive, "--out", out)
    assert first.returncode == 0, first.stderr[-2000:]
    before = digests(out)
    since = time.time()
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "data_prep/make_lmdb.py"), str(archive),
                             "--out", str(out), "--seed", "7"], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it once the new train LMDB and its manifest are written (wherever it writes them), while
    # the val and test LMDBs and the mean are still to come
    deadline = time.time() + 300
    while _newest(tmp_path / "work", "train_manifest.json", since) is None and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "make_lmdb.py finished before it was killed; the test proves nothing"
    assert digests(out) == before, "the killed run changed the bundle"
    assert_bundle_consistent(out)
    # the next run finishes, removes what the killed one left, and the bundle is the new one
    again = step("data_prep/make_lmdb.py", archive, "--out", out, "--seed", "7")
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "work")) == ["lmdb"]
    assert digests(out) != before
    assert_bundle_consistent(out)


def test_two_concurrent_make_lmdb_runs_cannot_interleave(tmp_path, tmp_path_factory):
    from _data_helpers import tiny_screen
    archive = _big_archive(tiny_screen(tmp_path_factory) / "main", tmp_path / "archive", copies=8)
    out = tmp_path / "work" / "lmdb"
    since = time.time()
    first = subprocess.Popen([sys.executable, os.path.join(REPO, "data_prep/make_lmdb.py"), str(archive),
                              "--out", str(out), "--seed", "1"], cwd=REPO, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not glob.glob(str(tmp_path / "work" / ".lmdb.*")) and _newest(tmp_path / "work", "data.mdb", since) is None \
            and first.poll() is None and time.time() < deadline:
        time.sleep(0.002)  # until the first writer has started writing
    second = step("data_prep/make_lmdb.py", archive, "--out", out, "--seed", "2")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    one_error_line(second, "make_lmdb.py", 3, "another process", f"pid {first.pid}", "is writing it now")
    assert_bundle_consistent(out)
    with open(out / "train_manifest.json") as f:
        assert json.load(f)["shuffle_seed"] == 0 + 1  # the first writer's bundle (train seed = --seed + 0)


FEATURE_WRITER = """
import sys, time, numpy as np
from deepyeast.analysis.features import feature_folder
with feature_folder(sys.argv[1], ["a.png", "b.png"]) as tmp:
    np.save(tmp + "/fc1.npy", np.full((2, 3), float(sys.argv[2]), np.float32))
    print("half-written", flush=True)
    time.sleep(600)
"""


def test_kill_9_while_writing_features_keeps_the_old_folder_and_next_run_cleans_up(tmp_path):
    from deepyeast.analysis.features import read_features
    out = tmp_path / "feat"
    from deepyeast.analysis.features import feature_folder
    with feature_folder(out, ["a.png", "b.png"]) as tmp:
        np.save(os.path.join(tmp, "fc1.npy"), np.zeros((2, 3), np.float32))
    proc = subprocess.Popen([sys.executable, "-c", FEATURE_WRITER, str(out), "1"], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "half-written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    arr, paths = read_features(str(out), "fc1")
    assert paths == ["a.png", "b.png"] and float(arr.max()) == 0.0  # the old folder, whole
    assert [n for n in os.listdir(tmp_path) if n.startswith(".feat.") and ".partial" in n]  # the killed run's
    with feature_folder(out, ["c.png"]) as tmp:
        np.save(os.path.join(tmp, "fc1.npy"), np.ones((1, 3), np.float32))
    assert sorted(os.listdir(tmp_path)) == ["feat"]  # leftovers removed, no lock file left
    assert read_features(str(out), "fc1")[1] == ["c.png"]


EXTRACTOR = """
import sys
from deepyeast.data.download import safe_extract
print("start", flush=True)
safe_extract(sys.argv[1], sys.argv[2])
"""


def test_kill_9_during_tar_extraction_leftover_is_removed_by_the_next_run(tmp_path):
    src = tmp_path / "src"
    (src / "plate01").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3000):
        (src / "plate01" / f"{i}-1-1-1.png").write_bytes(rng.bytes(2000))
    tgz = tmp_path / "main.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src / "plate01", arcname="plate01")
    dest = tmp_path / "main"
    dest.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", EXTRACTOR, str(tgz), str(dest)], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    deadline = time.time() + 120
    while not [n for n in os.listdir(dest) if n.startswith(".extracting.")] and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "extraction finished before the kill; the test proves nothing"
    assert [n for n in os.listdir(dest) if n.startswith(".extracting.")], "the killed run left nothing to clean"
    assert not os.path.exists(dest / "plate01")  # nothing half-extracted under a final name
    from deepyeast.data.download import safe_extract
    assert safe_extract(str(tgz), str(dest)) == ["plate01"]
    assert sorted(os.listdir(dest)) == ["plate01"]
    assert len(os.listdir(dest / "plate01")) == 3000


# ============================================================================ item 8: degenerate arguments

@pytest.mark.slow
def test_degenerate_iterations_and_solver_numbers_are_refused(convex):
    d, lmdb, net, init = convex
    res = deepyeast("bnstats", "-model", net, "-weights", init, "-out", d / "bn.caffemodel", "-iterations", "0")
    assert res.returncode == 2 and "-iterations: 0 must be at least 1" in res.stderr, res.stderr
    assert not os.path.exists(d / "bn.caffemodel")
    res = deepyeast("test", "-model", net, "-weights", init, "-iterations", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "must be at least 1" in res.stderr
    for field, value in (("base_lr", -0.1), ("max_iter", -5), ("momentum", float("nan"))):
        solver = _solver(d, net, name=f"bad_{field}", **{field: value})
        one_error_line(deepyeast("train", "-solver", solver, "-progress", "off"), "deepyeast train", 2,
                       f"solver: {field} is")
    res = step("data_prep/make_run_config.py", "--lmdb", d, "--out", d / "run", "--set", "base_lr=-1")
    one_error_line(res, "make_run_config.py", 2, "base_lr is -1")


def test_nan_metric_is_written_as_null_with_a_note(tmp_path):
    from deepyeast.utils.manifest import Result, write_result
    run_dir = tmp_path / "run"
    write_result(run_dir / "cells", Result("cells", "Cells", metrics={
        "cell_accuracy": {"value": 0.5, "correct": 1, "total": 2}, "cell_kappa": float("nan")}))
    with open(run_dir / "cells" / "result.json") as f:
        result = json.load(f, parse_constant=lambda c: pytest.fail(f"{c} in result.json"))
    assert result["metrics"]["cell_kappa"] is None and result["details"]["non_finite"] == {"metrics.cell_kappa": "nan"}
    # a manifest with a bare NaN (another tool's, or an older version's) still gives strict JSON
    text = (run_dir / "cells" / "result.json").read_text().replace('"cell_kappa": null', '"cell_kappa": NaN')
    (run_dir / "cells" / "result.json").write_text(text)
    res = step("analysis/make_report.py", "--run", run_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(run_dir / "metrics.json") as f:
        metrics = json.load(f, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert metrics["cell_kappa"] is None and "cell_kappa" in metrics["non_finite"]


def test_predictions_whose_pred_is_not_the_argmax_are_refused(tmp_path):
    from _prediction_tables import simulated_table
    from deepyeast.analysis.prediction_table import write_predictions
    import dataclasses
    table = simulated_table(n_classes=12)
    pred = table.pred.copy()
    row = int(np.flatnonzero(table.probs.max(axis=1) > 0.5)[0])
    pred[row] = (pred[row] + 1) % table.n_classes
    path = tmp_path / "cells.csv"
    write_predictions(path, table)
    text = path.read_text().splitlines()
    cols = text[row + 1].split(",")
    cols[4] = str(pred[row])
    text[row + 1] = ",".join(cols)
    path.write_text("\n".join(text) + "\n")
    res = step("analysis/evaluate_cells.py", "--predictions", path, "--out", tmp_path / "cells", "--resamples", "10",
               "--no-figures", "--allow-empty-classes")
    one_error_line(res, "evaluate_cells.py", 2, f"row {row + 1} (line {row + 2})", "column 'pred'",
                   "not the most probable class")
    assert not os.path.exists(tmp_path / "cells" / "result.json")
    with pytest.raises(Exception, match="not the most probable"):
        write_predictions(tmp_path / "x.csv", dataclasses.replace(table, pred=pred))
