"""End-to-end: the Makefile pipeline behind `make demo` and `make reproduce`, at a tiny size.

These run the real chain (synthetic micrographs -> crops -> LMDB -> our engine's
training -> predictions -> CellProfiler features -> R randomForest -> quality
filter -> protein calls -> transfer -> interpretation -> report), with only the
sizes and the schedule made small.
"""

import json
import os
import re
import shutil
import subprocess

import pytest

from _data_helpers import REPO_ROOT
from _pipeline_checks import TINY_SCHEDULE, check_report
from deepyeast.constants import SPLITS, list_file
from deepyeast.data.lists import mixed_protein_cells, read_mixed_table

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.r, pytest.mark.usefixtures("r_present")]



def _make(*args, timeout=900):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO_ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return proc


def _check_lowest_validation_loss_was_chosen(train_dir):
    """The weights the analyses used are the snapshot whose iteration had the lowest TEST loss in the
    training log (read here with its own parser, not the pipeline's), and not another snapshot."""
    import re

    with open(os.path.join(train_dir, "train.log"), encoding="utf-8") as f:
        log = f.read()
    losses, current = {}, None
    for line in log.splitlines():
        m = re.search(r"Iteration (\d+), Testing net \(#0\)", line)
        if m:
            current = int(m.group(1))
        m = re.search(r"Test net output #\d+: loss = (\S+)", line)
        if m and current is not None:
            losses[current] = float(m.group(1))
    snapshots = {int(m.group(1)): os.path.join(train_dir, "snapshots", name)
                 for name in os.listdir(os.path.join(train_dir, "snapshots"))
                 for m in [re.fullmatch(r"deepyeast_iter_(\d+)\.caffemodel", name)] if m}
    candidates = {it: loss for it, loss in losses.items() if it in snapshots}
    assert len(candidates) >= 2, (losses, sorted(snapshots))  # a real choice between snapshots
    best = min(candidates, key=candidates.get)
    with open(os.path.join(train_dir, "chosen.caffemodel"), "rb") as f:
        chosen = f.read()
    contents = {}
    for it, path in snapshots.items():
        with open(path, "rb") as f:
            contents[it] = f.read()
    assert chosen == contents[best], f"chosen.caffemodel is not the iteration-{best} snapshot (losses {candidates})"
    assert sum(chosen == c for c in contents.values()) == 1  # the snapshots differ: the check tells them apart


def _check_bundle_and_classify(run, tmp_path, tmp_path_factory):
    """RUN/model/ is a valid bundle of the run's weights and metrics, and `make classify` takes it alone."""
    from _data_helpers import tiny_screen
    from deepyeast.model import read_bundle
    from deepyeast.utils.io import file_digest

    bundle = read_bundle(os.path.join(run, "model"))
    assert file_digest(bundle.weights_path) == file_digest(os.path.join(run, "train", "final.caffemodel"))
    assert file_digest(bundle.mean_path) == file_digest(os.path.join(run, "lmdb", "mean.binaryproto"))
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert bundle.metadata["metrics"]["cell_accuracy"]["correct"] == metrics["cell_accuracy"]["correct"]
    assert bundle.metadata["training"]["max_iter"] == 6 and "synthetic screen (size tiny" in \
        bundle.metadata["training"]["data"]
    assert bundle.examples().shape[1:] == (2, 64, 64)
    fields = tiny_screen(tmp_path_factory, jobs=1) / "main" / "fields"
    table = tmp_path / "screen.csv"  # the fields without their labels
    rows = [r.split(",") for r in (fields / "images.csv").read_text().splitlines()[1:]]
    table.write_text("image,plate,protein\n" + "".join(f"{fields / r[0]},{r[1]},{r[2]}\n" for r in rows))
    out = tmp_path / "classified"
    proc = _make("classify", f"MODEL={os.path.join(run, 'model')}", f"IMAGES={table}", f"OUT={out}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    summary = json.load(open(out / "summary.json"))
    assert summary["n_proteins"] == len(rows) and summary["n_cells"] > 10 and summary["accuracy"] is None
    assert (out / "proteins.csv").read_text().count("\n") == len(rows) + 1


def test_demo_pipeline_tiny_and_rerun_skips(tmp_path, tmp_path_factory):
    run = os.path.relpath(tmp_path / "demo", REPO_ROOT)
    # COMPARE_PROTEINS: the demo's comparison of two screens (a generated pair classified with the run's
    # network, then compared), on a few proteins
    args = ("pipeline", f"RUN={run}", "SCREEN=synthetic", "SIZE=tiny", f"SCHEDULE={TINY_SCHEDULE}",
            "GRID=small", "PRECISION=bf16", "PREDICT_PRECISION=bf16", "COMPARE_PROTEINS=12", "OOD_CELLS=120")
    proc = _make(*args)
    assert proc.returncode == 0, proc.stdout[-4000:]
    metrics = check_report(os.path.join(REPO_ROOT, run))
    compare = json.load(open(os.path.join(REPO_ROOT, run, "compare", "summary.json")))
    assert compare["proteins"]["in_both"] == 12
    assert compare["proteins"]["tested"] + compare["proteins"]["insufficient"] == 12
    with open(os.path.join(REPO_ROOT, run, "compare", "changes.csv")) as f:
        assert sum(1 for _ in f) == 13
    assert 'href="compare/report.html"' in open(os.path.join(REPO_ROOT, run, "report.html")).read()
    assert "==> [" in proc.stdout  # one step line per stage
    # snapshots pruned after the choice: the final one (chosen, and the resume point) alone stays
    snaps = os.listdir(os.path.join(REPO_ROOT, run, "train", "snapshots"))
    assert sorted(snaps) == ["deepyeast_iter_6.caffemodel", "deepyeast_iter_6.dystate.npz",
                             "deepyeast_iter_6.solverstate"], snaps
    # the paper's procedures run on the synthetic screen: its proteins with two compartments (held out of
    # the splits) checked top two / top three, the non-cell filter, the transfer headline on fc1
    from deepyeast.data.make_synthetic import SIZES
    assert metrics["mixed_proteins_top_two"]["total"] == SIZES["tiny"]["mixed"]
    assert metrics["mixed_proteins_top_three_rest"]["total"] == \
        SIZES["tiny"]["mixed"] - metrics["mixed_proteins_top_two"]["correct"]
    # the paper's non-cell filter ran on the screen's list (or says why it could not: a tiny
    # screen and a 6-iteration network may leave too few cells correct by both classifiers)
    quality = metrics["results"]["quality"]
    commands = open(os.path.join(REPO_ROOT, run, "commands.txt")).read()
    assert "--noncells" in commands and "--net-val" in commands and "--val-out" in commands
    # PREDICT_PRECISION (the demo's bf16 predictions and features) reaches every network step of the analyses
    predicts = [c for c in commands.splitlines() if "analysis/predict.py" in c]
    assert len(predicts) >= 6 and all("--precision bf16" in c for c in predicts), predicts
    if quality["missing"]:
        assert [m["what"] for m in quality["missing"]] == ["non-cell filter"]
        assert "needs at least" in quality["missing"][0]["reason"]
        assert metrics["cell_accuracy_filtered"] is None and metrics["rf_cell_accuracy_filtered"] is None
    else:
        assert metrics["cell_accuracy_filtered"]["total"] > 0 and metrics["rf_cell_accuracy_filtered"]["total"] > 0
    assert metrics["transfer_accuracy"]["headline_layer"] == "fc1"
    assert metrics["results"]["forest"]["details"]["cellprofiler_features"]["source"] == "cp-measure"
    assert metrics["forest_features"]["n_features"] == 430
    # the paper's Results item by item: per-class counts, the claims checked, the paper's mixed metric
    from deepyeast.constants import CLASS_NAMES
    assert set(metrics["recall_per_class"]) == set(CLASS_NAMES) == set(metrics["rf_precision_per_class"])
    assert sum(c["total"] for c in metrics["recall_per_class"].values()) == metrics["cell_accuracy"]["total"]
    claims = metrics["results"]["paper"]["details"]["claims"]
    assert set(claims) == {"network_wins_recall_every_class", "network_wins_precision_all_but_nucleolus"}
    nuc_cyt = sum(sorted(CLASS_NAMES[c] for c in m["classes"]) == ["cytoplasm", "nucleus"]
                  for m in read_mixed_table(os.path.join(REPO_ROOT, run, "data", "main", "mixed_proteins.csv")))
    assert (metrics["mixed_nucleus_cytoplasm_top_two"] or {"total": 0})["total"] == nuc_cyt
    assert metrics["chosen_snapshot_iteration"] == 6 and metrics["rf_n_features"] == 430
    assert "Results, item by item, ours beside theirs" in open(os.path.join(REPO_ROOT, run, "report.html")).read()
    assert [x["input"] for x in metrics["not_provided"]] == (["quality"] if quality["missing"] else [])
    _check_bundle_and_classify(os.path.join(REPO_ROOT, run), tmp_path, tmp_path_factory)
    # OOD_CELLS: the bundle's OOD class statistics from an even sample of the 300 training cells
    bundle_meta = json.load(open(os.path.join(REPO_ROOT, run, "model", "bundle.json")))
    assert bundle_meta["ood"]["training_cells"] == 120
    # ... in the arithmetic of the run's predictions (PREDICT_PRECISION)
    assert bundle_meta["ood"]["network_precision"] == "bf16"
    assert [c for c in commands.splitlines() if "--ood-train" in c and "--precision bf16" in c]

    # every step is a file target: nothing is left to do on a re-run
    again = _make("-q", *args)
    assert again.returncode == 0, "make -q says a finished pipeline is out of date:\n" + again.stdout[-2000:]
    # removing one analysis output re-runs that step alone
    os.remove(os.path.join(REPO_ROOT, run, "proteins", "result.json"))
    dry = _make("-n", *args)
    assert "protein_level.py" in dry.stdout and "deepyeast train" not in dry.stdout, dry.stdout


PUBLISHED_LISTS = tuple(list_file(s) for s in ("doc",) + SPLITS) + tuple(list_file(s, "transfer")
                                                                       for s in ("doc",) + SPLITS)
"""The eight text files of the published archive: six split lists and two class tables."""
REAL_CROP_NAME = re.compile(r"^plate\d{2}/\d+-\d+-\d+-\d+\.png$")
"""A crop as the published lists name it: plateNN/<f1>-<f2>-<f3>-<f4>.png."""


def published_shape_archive(screen, dest):
    """Copy of a synthetic screen holding exactly what the published archive holds: the eight list
    and class-table files at the top, the listed PNGs under main/plateNN/ and transfer/plateNN/, and
    nothing else (no truth tables, no unlisted crops, no fields)."""
    os.makedirs(dest)
    for part, prefix in (("main", "HOwt_"), ("transfer", "HOwt_transfer_")):
        for name in os.listdir(screen / part):
            if name.startswith(prefix) and name.endswith(".txt") and name in PUBLISHED_LISTS:
                shutil.copy(screen / part / name, dest / name)
        for s in SPLITS:
            for line in (screen / part / f"{prefix}{s}.txt").read_text().splitlines():
                rel = line.split()[0]
                os.makedirs(dest / part / os.path.dirname(rel), exist_ok=True)
                shutil.copy(screen / part / rel, dest / part / rel)
    return dest


def _archive_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_published_shape_archive_holds_only_what_the_published_one_holds(tmp_path, tmp_path_factory):
    from _data_helpers import SHARED_SPLITS, tiny_screen
    archive = published_shape_archive(tiny_screen(tmp_path_factory), tmp_path / "archive")
    files = _archive_files(archive)
    top = sorted(f for f in files if os.sep not in f)
    assert top == sorted(PUBLISHED_LISTS)
    if os.path.isdir(SHARED_SPLITS):  # the real published files, where this checkout has them
        assert top == sorted(f for f in os.listdir(SHARED_SPLITS) if f.endswith(".txt"))
    listed = set()
    for part, prefix in (("main", "HOwt_"), ("transfer", "HOwt_transfer_")):
        for s in SPLITS:
            for line in (archive / f"{prefix}{s}.txt").read_text().splitlines():
                rel, label = line.split()
                assert REAL_CROP_NAME.match(rel) and label.isdigit(), line
                listed.add(os.path.join(part, rel))
        doc = (archive / f"{prefix}doc.txt").read_text().splitlines()
        assert doc[0] == "label;label_idx"
    assert set(files) - set(top) == listed  # every other file is a listed PNG, and every listed PNG is there


def test_reproduce_on_an_archive_shaped_like_the_published_one(tmp_path, tmp_path_factory):
    """`make reproduce` on lists, class tables and PNGs only: it finishes with report.html and
    metrics.json; what needs data the archive lacks (non-cell labels, proteins with two
    compartments) is reported as not run, with its reason and option, and its metrics are null.
    Given MIXED=FILE afterwards, the mixed-protein check runs alone."""
    from _data_helpers import tiny_screen
    screen = tiny_screen(tmp_path_factory)
    archive = published_shape_archive(screen, tmp_path / "archive")
    before = _archive_files(archive)
    run = os.path.relpath(tmp_path / "reproduce", REPO_ROOT)
    # every snapshot kept (KEEP_SNAPSHOTS=1), so that the check below sees the choice among all of them
    args = ("reproduce", f"REPRO_RUN={run}", f"ARCHIVE_SRC={archive}", "REPRO_GPU=", "REPRO_GRID=small",
            f"REPRO_SCHEDULE={TINY_SCHEDULE}", "KEEP_SNAPSHOTS=1", "TSNE_CELLS=40")
    proc = _make(*args)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert _archive_files(archive) == before  # the source archive is read, never written
    run_dir = os.path.join(REPO_ROOT, run)
    metrics = check_report(run_dir)
    # the paper's solver with only the schedule changed, and the snapshot chosen by validation loss
    solver = open(os.path.join(run_dir, "train", "solver.prototxt")).read()
    assert "base_lr: 0.1" in solver and "momentum: 0.9" in solver and "max_iter: 6" in solver
    _check_lowest_validation_loss_was_chosen(os.path.join(run_dir, "train"))
    splits = json.load(open(os.path.join(run_dir, "data", "screen.json")))
    assert splits["ok"] and set(splits["splits"]) == set(SPLITS)
    # no step read a truth table only the generator writes
    commands = open(os.path.join(run_dir, "commands.txt")).read()
    # (the run's own protein-level tables, RUN/proteins/proteins.csv and RUN/rf_proteins/..., share a name)
    commands = re.sub(r"/(rf_)?proteins/proteins(_mixed)?\.csv", "/<run's protein table>", commands)
    for truth in ("cell_quality.csv", "proteins.csv", "mixed_proteins.csv", "noncells"):
        assert truth not in commands, truth
    # not run for want of data: null metrics, a not_provided entry with reason and option
    for key in ("cell_accuracy_filtered", "rf_cell_accuracy_filtered", "mixed_proteins_top_two",
                "mixed_proteins_top_three_rest"):
        assert metrics[key] is None, key
    options = {(x["input"], x["what"]): (x["reason"], x["option"]) for x in metrics["not_provided"]}
    assert options[("quality", "non-cell filter")] == ("the published archive has no non-cell labels",
                                                       options[("quality", "non-cell filter")][1])
    assert options[("quality", "non-cell filter")][1].startswith("NONCELLS=FILE")
    assert any(i == "proteins" and o.startswith("MIXED=FILE") for (i, _), (_, o) in options.items())
    assert metrics["complete"] is True and metrics["cell_accuracy"]["total"] == 100
    assert metrics["results"]["screen"]["title"] == "The cells: the image archive"
    html = open(os.path.join(run_dir, "report.html"), encoding="utf-8").read()
    assert "Not done in this run" in html and "NONCELLS=FILE" in html and "MIXED=FILE" in html
    assert "not run: see" in html
    # the transfer headline is the forest on fc1 (Figure 4C), with Figure 4B's t-SNE (paper settings)
    transfer = json.load(open(os.path.join(run_dir, "transfer", "result.json")))
    assert transfer["details"]["headline_layer"] == "fc1" and transfer["details"]["tsne"] == "paper"
    assert metrics["transfer_accuracy"]["headline_layer"] == "fc1"
    # Figure 3B as the paper: scikit-learn's defaults on every neuron's output of the sampled test cells
    interpret = json.load(open(os.path.join(run_dir, "interpret", "interpret.json")))
    assert interpret["tsne"] == "paper" and interpret["tsne_reduce"] == "full" and interpret["tsne_cells"] == 40
    assert interpret["layers"]["conv1"]["tsne_input_dims"] == 64 * 64 * 64
    assert interpret["layers"]["fc1"]["tsne_input_dims"] == 512
    # Figure S4 (our reading) from the run's own weights
    assert interpret["gabor"]["layer"] == "conv1" and interpret["gabor"]["n_filters"] == 64
    assert 0 < metrics["first_layer_gabor_r2_median"] <= 1

    # the user supplies the proteins with two compartments (table + crops outside the archive)
    mixed_dir = tmp_path / "mixed"
    mixed_dir.mkdir()
    shutil.copy(screen / "main" / "mixed_proteins.csv", mixed_dir)
    for rel, _ in mixed_protein_cells(str(screen / "main" / "mixed_proteins.csv")):
        os.makedirs(mixed_dir / os.path.dirname(rel), exist_ok=True)
        shutil.copy(screen / "main" / rel, mixed_dir / rel)
    os.remove(os.path.join(run_dir, "proteins", "result.json"))
    again = _make(*args, f"MIXED={mixed_dir / 'mixed_proteins.csv'}")
    assert again.returncode == 0, again.stdout[-4000:]
    steps = [line.split("] ", 1)[1] for line in again.stdout.splitlines() if line.startswith("==> [")]
    # the report and the model bundle (which carries the run's metrics) follow the new protein calls
    assert steps == ["network predictions (proteins with two compartments)", "protein-level calls (network)",
                     "the paper's results item by item", "report", "model bundle"], again.stdout[-3000:]
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    n_mixed = len(read_mixed_table(str(mixed_dir / "mixed_proteins.csv")))
    assert metrics["mixed_proteins_top_two"]["total"] == n_mixed
    assert metrics["mixed_proteins_top_three_rest"]["total"] == n_mixed - metrics["mixed_proteins_top_two"]["correct"]
    assert not any(x["input"] == "proteins" for x in metrics["not_provided"])
    from deepyeast.model import read_bundle
    bundle = read_bundle(os.path.join(run_dir, "model"))
    assert "DeepYeast archive" in bundle.metadata["training"]["data"] and bundle.metadata["training"]["base_lr"] == 0.1
