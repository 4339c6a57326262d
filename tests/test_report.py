"""The report: every figure embedded, metrics.json complete with counts, missing inputs named,
bad inputs refused without writing anything, and (when chromium is installed) the page renders."""

import base64
import html.parser
import json
import os
import shutil
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from _prediction_tables import simulated_table, write_table  # noqa: E402
from deepyeast.utils.run_context import RunContext  # noqa: E402
from deepyeast.constants import PAPER_RESULTS  # noqa: E402
from deepyeast.utils.io import InputError  # noqa: E402
from deepyeast.analysis.evaluate_cells import run_cell_evaluation  # noqa: E402
from deepyeast.analysis.prediction_table import make_predictions  # noqa: E402
from deepyeast.analysis.cp_features import describe_features, feature_names  # noqa: E402
from deepyeast.analysis.protein_level import run_protein_level  # noqa: E402
from deepyeast.analysis.random_forest import write_forest_result  # noqa: E402
from deepyeast.analysis.transfer import write_transfer_result  # noqa: E402
from deepyeast.report.make_report import build_report  # noqa: E402
from deepyeast.utils.manifest import Result, figure, write_result  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED_KEYS = ("cell_accuracy", "cell_kappa", "cell_accuracy_filtered", "protein_accuracy",
                 "protein_accuracy_min10", "rf_cell_accuracy", "rf_protein_accuracy", "transfer_accuracy")


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.figures, self.ids, self.text = [], [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "figure":
            self.figures.append(a.get("data-file"))
        if "id" in a:
            self.ids.add(a["id"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _png(path, color):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], color=color)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A full run folder: cell evaluation, protein level (net + RF), mixtures, quality, transfer, interpret."""
    tmp = tmp_path_factory.mktemp("run")
    net_t = simulated_table(n_proteins=60, cells_range=(4, 16), accuracy=0.85, seed=7)
    rf_t = simulated_table(n_proteins=60, cells_range=(4, 16), accuracy=0.6, seed=7)
    net = write_table(tmp / "net.csv", net_t)
    rf = write_table(tmp / "rf.csv", rf_t)
    run = tmp / "run"
    run_cell_evaluation(net, run / "cells", rf, n_resamples=300,
                        context=RunContext(seed=3, command="python analysis/evaluate_cells.py"))
    mix = tmp / "mixed_proteins.csv"
    mix.write_text("protein,compartment_a,compartment_b\nplate09/M1,nucleus,vacuole\n")
    probs = np.full((4, 12), 0.02)
    probs[:, [8, 11]] = 0.4
    mixed = write_table(tmp / "mixed.csv", make_predictions([f"plate09/M1-0-{i}-{i}.png" for i in range(4)],
                                                            ["plate09/M1"] * 4, ["mixed"] * 4, [8] * 4, probs,
                                                            require_all_classes=False))
    run_protein_level(net, run / "proteins" / "proteins.csv", (str(mix), mixed),
                      context=RunContext(command="python analysis/protein_level.py ..."))
    run_protein_level(rf, run / "rf_proteins" / "proteins.csv", classifier="random_forest")
    write_forest_result(run / "rf", {
        "best": {"ntree": 150, "mtry": 20, "nodesize": 1, "val_accuracy": 0.61}, "grid_name": "small",
        "grid": {"ntree": [50, 150], "mtry": [20, 50], "nodesize": [1]}, "n_train": 600, "n_val": 200, "n_test": 574,
        "table": [{"ntree": 150, "mtry": 20, "nodesize": 1, "val_accuracy": 0.61}], "seed": 1,
        "test_accuracy": {"value": 0.6, "correct": 344, "total": 574}}, describe_features(feature_names()))
    write_result(run / "quality", Result("quality", "Removing non-cells", metrics={
        "cell_accuracy_filtered": {"value": 0.9, "correct": 450, "total": 500},
        "rf_cell_accuracy_filtered": {"value": 0.7, "correct": 350, "total": 500}},
        details={"cv": {"mtry": 10, "seed": 11}}))
    _png(run / "transfer" / "transfer_accuracy.png", "red")
    write_transfer_result(run / "transfer", {
        "seed": 5, "best_layer": "fc2", "headline_layer": "fc1",
        "classes": ["actin", "bud neck", "lipid particle", "microtubule"],
        "cells": {"train": 40, "val": 20, "test": 400},
        "transfer_accuracy": {
            "fc1": {"1": {"accuracy": 0.4, "correct": 160, "total": 400, "lo": 0.35, "hi": 0.45},
                    "10": {"accuracy": 0.7, "correct": 280, "total": 400, "lo": 0.65, "hi": 0.75}},
            "fc2": {"1": {"accuracy": 0.45, "correct": 180, "total": 400, "lo": 0.4, "hi": 0.5},
                    "10": {"accuracy": 0.72, "correct": 288, "total": 400, "lo": 0.67, "hi": 0.77}},
            "cellprofiler": {"1": {"accuracy": 0.3, "correct": 120, "total": 400, "lo": 0.25, "hi": 0.35},
                             "10": {"accuracy": 0.5, "correct": 200, "total": 400, "lo": 0.45, "hi": 0.55}}}})
    _png(run / "interpret" / "tsne.png", "blue")
    write_result(run / "interpret", Result("interpret", "What the layers encode", figures=[figure("tsne.png", "t-SNE")],
                 seeds={"seed": 0}, details={"n_cells": 100}))
    from deepyeast.analysis.paper_results import PaperInputs, run_paper_results
    (tmp / "rf_grid.json").write_text(json.dumps({"best": {"ntree": 150, "mtry": 20, "nodesize": 1},
                                                   "n_features": 430, "grid_name": "small"}))
    (tmp / "tsne.csv").write_text("path,label,fc3_x,fc3_y\n")
    run_paper_results(run / "paper", PaperInputs(predictions=net, archive=str(tmp),
                                                 forest_summary=str(tmp / "rf_grid.json"), tsne=str(tmp / "tsne.csv"),
                                                 proteins=str(run / "proteins" / "proteins.csv"),
                                                 mixed=str(run / "proteins" / "proteins_mixed.csv")),
                      make_figures=False)
    _png(run / "figures" / "gallery.png", "green")
    (run / "commands.txt").write_text("# the demo\npython data_prep/make_synthetic.py --size demo\n")
    return run


def _all_pngs(run):
    return sorted(os.path.relpath(os.path.join(d, f), run) for d, _, fs in os.walk(run) for f in fs
                  if f.endswith(".png"))


def test_report_complete(run_dir, tmp_path):
    out, met = tmp_path / "report.html", tmp_path / "metrics.json"
    m = build_report(run_dir, out, met, command="python analysis/make_report.py --run RUN")
    page = _parse(out)
    pngs = _all_pngs(run_dir)
    assert len(pngs) == 7  # fig2a, fig2b, fig2d, fig2d_rf, transfer, tsne, gallery
    assert sorted(page.figures) == pngs
    assert len(page.images) == len(pngs)
    for rel, src in zip(page.figures, page.images):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (run_dir / rel).read_bytes()
    assert "complete" in page.ids and "incomplete" not in page.ids
    text = " ".join(page.text)
    for needle in ("Headline results beside the paper", "cell periphery", "vacuole", "make_synthetic.py --size demo",
                   "evaluate_cells.py", "make_report.py", "numpy", "fc2 (best on validation)"):
        assert needle in text, needle
    # every forest number says what features the forest learned from (ours are not the paper's)
    assert "Random forest accuracy per cell †" in text and "Random forest accuracy per protein †" in text
    assert "† The forest's features: our 430 CellProfiler-style features, measured on each 64x64 crop" in text
    assert text.count("Random-forest numbers here learned from our 430") >= 3  # cells, rf_proteins, quality
    assert "not-done" not in page.ids  # everything was given
    # a reader is told what a reproduction looks like (CPU type, seeds) and where the spread is measured
    assert "spread" in page.ids and "bench/bench_seed_spread.py" in text and "training seed" in text
    js = json.loads(met.read_text())
    assert js == json.loads(json.dumps(m))
    assert js["complete"] is True and js["missing"] == []
    assert js["paper_counts"]["rf_protein_accuracy_min10"] == {"value": 214 / 222, "correct": 214, "total": 222}
    assert js["results"]["forest"]["details"]["cellprofiler_features"]["source"] == "cp-measure"
    for key in REQUIRED_KEYS:
        assert js[key] is not None, key
    cells = json.loads((run_dir / "cells" / "cell_metrics.json").read_text())
    assert js["cell_accuracy"]["correct"] == cells["cell_accuracy"]["correct"]
    assert js["cell_accuracy_filtered"] == {"value": 0.9, "correct": 450, "total": 500}
    assert js["transfer_accuracy"]["network"]["10"] == {"value": 0.7, "correct": 280, "total": 400, "lo": 0.65,
                                                         "hi": 0.75}
    assert js["transfer_accuracy"]["cellprofiler"]["1"]["correct"] == 120
    assert js["mixed_proteins_top_two"] == {"value": 1.0, "correct": 1, "total": 1}
    assert js["paper"] == PAPER_RESULTS
    assert js["checks"]["network_beats_forest_per_cell"] is True
    assert js["seeds"]["cells: seed"] == 3 and js["seeds"]["quality: cv.seed"] == 11
    assert "numpy" in js["versions"]


def test_report_names_missing_inputs(run_dir, tmp_path):
    run = tmp_path / "partial"
    shutil.copytree(run_dir, run)
    shutil.rmtree(run / "transfer")
    os.remove(run / "quality" / "result.json")
    m = build_report(run, tmp_path / "r.html", tmp_path / "m.json")
    page = _parse(tmp_path / "r.html")
    assert "incomplete" in page.ids
    text = " ".join(page.text)
    assert ("This report is incomplete." in text and os.path.join("quality", "result.json") in text
            and os.path.join("transfer", "result.json") in text)
    assert m["complete"] is False
    assert {x["input"] for x in m["missing"]} == {"quality", "transfer"}
    assert m["not_provided"] == []
    assert m["cell_accuracy_filtered"] is None and m["transfer_accuracy"] is None
    assert m["checks"]["filtering_raises_network_accuracy"] is None


def test_missing_required_input_writes_nothing(run_dir, tmp_path):
    run = tmp_path / "norequired"
    shutil.copytree(run_dir, run)
    os.remove(run / "cells" / "result.json")
    with pytest.raises(InputError, match=r"result.json: required report input 'cells' is missing"):
        build_report(run, tmp_path / "r.html", tmp_path / "m.json")
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("bad", ["{not json", json.dumps({"transfer_accuracy": [1, 2]})])
def test_malformed_input_writes_nothing(run_dir, tmp_path, bad):
    run = tmp_path / "bad"
    shutil.copytree(run_dir, run)
    (run / "transfer" / "result.json").write_text(bad)
    with pytest.raises(InputError, match=r"transfer.result.json"):
        build_report(run, tmp_path / "r.html", tmp_path / "m.json")
    assert sorted(os.listdir(tmp_path)) == ["bad"]


def test_make_report_script(run_dir, tmp_path):
    script = os.path.join(REPO, "analysis", "make_report.py")
    res = subprocess.run([sys.executable, script, "--run", str(run_dir), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "complete; 7 figures" in res.stdout
    res = subprocess.run([sys.executable, script, "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "run folder does not exist" in res.stderr
    assert not (tmp_path / "x").exists()


def test_report_renders_in_headless_chromium(run_dir, tmp_path, chromium_path):
    """Load the page in a real browser; count the figures that decoded to an image with a size."""
    build_report(run_dir, tmp_path / "report.html", tmp_path / "m.json")
    probe = tmp_path / "probe.html"
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    script = ("<script>window.addEventListener('load',()=>{document.body.setAttribute('data-loaded',"
              "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length)});</script>")
    probe.write_text(page.replace("</body>", script + "</body>"), encoding="utf-8")
    res = subprocess.run([chromium_path, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'data-loaded="7"' in res.stdout


def test_extras_do_not_make_report_incomplete(run_dir, tmp_path):
    run = tmp_path / "noextras"
    shutil.copytree(run_dir, run)
    run_protein_level(run_dir.parent / "net.csv", run / "proteins" / "proteins.csv")  # no mixtures table this time
    os.remove(run / "commands.txt")
    m = build_report(run, tmp_path / "r.html", tmp_path / "m.json")
    assert m["complete"] is True
    assert {x["input"] for x in m["not_provided"]} == {"proteins", "commands"}


def test_analyses_not_run_for_want_of_data_are_named_with_their_option_and_null(run_dir, tmp_path):
    """The published archive has no non-cell labels and no proteins with two compartments: the report
    says so at the top and in each section, with the option that supplies them; their metrics are
    null in metrics.json and listed under not_provided."""
    from deepyeast.analysis.quality_filter import write_quality_not_run

    run = tmp_path / "archive_run"
    shutil.copytree(run_dir, run)
    run_protein_level(run_dir.parent / "net.csv", run / "proteins" / "proteins.csv")  # no mixed-protein table
    os.remove(run / "quality" / "result.json")
    write_quality_not_run(run / "quality")
    m = build_report(run, tmp_path / "r.html", tmp_path / "m.json")
    page = _parse(tmp_path / "r.html")
    text = " ".join(page.text)
    assert m["complete"] is True and "not-done" in page.ids
    assert "Not done in this run" in text and "non-cell filter" in text and "NONCELLS=FILE" in text
    assert "MIXED=FILE" in text and text.count("not run: see") == 4  # 2 filtered accuracies, 2 mixed-protein rows
    for key in ("cell_accuracy_filtered", "rf_cell_accuracy_filtered", "mixed_proteins_top_two",
                "mixed_proteins_top_three_rest"):
        assert key in m and m[key] is None, key
    options = {(x["input"], x["what"]): x["option"] for x in m["not_provided"]}
    assert options[("quality", "non-cell filter")].startswith("NONCELLS=FILE")
    assert any(i == "proteins" and o.startswith("MIXED=FILE") for (i, _), o in options.items())
    assert m["checks"]["filtering_raises_network_accuracy"] is None
