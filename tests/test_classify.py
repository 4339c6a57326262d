"""Classifying a new screen (analysis/classify_screen.py): tables against their definitions, the
Dirichlet calls and flags, labels optional, bad input, bf16 against fp32, the report in a real browser.

The bundle here has seeded weights (tests/_bundles.py), so its calls are arbitrary; what is
tested is that every number in the outputs is what the definitions say.  Whether a trained
bundle recovers the compartments is tests/test_classify_e2e.py.
"""

import csv
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from _bundles import make_bundle
from _data_helpers import REPO_ROOT, tiny_screen
from deepyeast.analysis.classify_screen import CONFIDENCE, DUAL_SHARE, ClassifySettings, classify_screen, p_call
from deepyeast.analysis.protein_level import dirichlet_map
from deepyeast.constants import CLASS_NAMES
from deepyeast.data.segment_cells import cells_and_crops, segment_marker
from deepyeast.model import read_bundle
from deepyeast.engine.inference import InferenceSettings
from deepyeast.utils.io import OUTPUT_MARKER, InputError
from deepyeast.utils.run_context import RunContext

QUIET = RunContext(progress=False)

SCRIPT = os.path.join(REPO_ROOT, "analysis", "classify_screen.py")


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    path, _, _ = make_bundle(str(tmp / "model"), str(tmp))
    return path


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    """A copy of the tiny screen's saved main fields, plus an empty field: (folder, rows of
    fields/images.csv).  A copy: the shared screen stays as the generator wrote it (test_synthetic
    compares it with a fresh one)."""
    d = tmp_path_factory.mktemp("fields") / "fields"
    shutil.copytree(tiny_screen(tmp_path_factory, jobs=1) / "main" / "fields", d)
    rows = _csv(d / "images.csv")
    rng = np.random.default_rng(5)
    tifffile.imwrite(d / "empty_field.tif", np.clip(rng.normal(12, 2, (2, 256, 256)), 0, 255).astype(np.uint8))
    shutil.copyfile(d / rows[0]["image"], d / "second_field.tif")  # a second micrograph of the first protein
    return d, rows


def _images(fields):
    """(micrograph path, fields row) of the table's rows with cells: the three fields, then the copy of the first."""
    d, rows = fields
    return [(d / r["image"], r) for r in rows] + [(d / "second_field.tif", rows[0])]


def _table(tmp_path, fields, labels=False, extra=()):
    """An images table naming the fields by absolute path: the three fields, a second field of the
    first protein (a protein with two micrographs; a copy of its first), and an empty field as its
    own protein."""
    d, rows = fields
    head = "image,plate,protein" + (",label" if labels else "")
    lines = [head]
    for image, r in _images(fields):
        lines.append(f"{image},{r['plate']},{r['protein']}" + (f",{CLASS_NAMES[int(r['label'])]}"
                                                                if labels else ""))
    lines.append(f"{d / 'empty_field.tif'},9,009009000" + (",vacuole" if labels else ""))
    lines.extend(extra)
    path = tmp_path / "images.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.ids, self.text = [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        if "id" in a:
            self.ids.add(a["id"])

    def handle_data(self, data):
        self.text.append(data)


def test_p_call_is_the_dirichlet_probability_that_the_call_leads():
    rng = np.random.default_rng(0)
    for alpha in ([9.5, 7.0, 1.2, 1.0], [3.0, 1.0, 1.0], [40.0, 35.0, 2.0, 1.5, 1.0]):
        draws = rng.dirichlet(alpha, 200_000)
        want = np.mean(draws[:, 0] > draws[:, 1])
        assert p_call(alpha[0], alpha[1]) == pytest.approx(want, abs=0.005)
    assert p_call(4.0, 1.0) == pytest.approx(1 - 0.5 ** 4)  # 3 cells called with certainty
    assert p_call(5.0, 5.0) == pytest.approx(0.5)


def test_tables_follow_their_definitions_without_labels(bundle, fields, tmp_path):
    d, rows = fields
    table = _table(tmp_path, fields)
    out = tmp_path / "out"
    s = classify_screen(bundle, str(table), str(out), ClassifySettings(n_resamples=200), QUIET)
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "cells.csv", "figures", "gallery", "images.csv", "proteins.csv", "report.html",
                                       "summary.json"]
    b = read_bundle(bundle)
    predictor = b.predictor()
    cells = _csv(out / "cells.csv")
    assert "label" not in cells[0] and list(cells[0])[:11] == ["image", "plate", "well", "protein", "cell", "x", "y",
                                                               "area", "padded", "pred", "class"]
    # every cell of every micrograph, in table order, with the bundle's probabilities of its crop
    expect = []
    for path, r in _images(fields):
        image = tifffile.imread(path)
        mask, found, crops = cells_and_crops(image, segment_marker(image[0]))
        assert len(found["cell"]) > 0
        probs = predictor(crops)
        for k in range(len(crops)):
            expect.append((str(path), r["protein"], int(found["cell"][k]), found["x"][k], found["y"][k],
                           probs[k]))
    assert len(cells) == len(expect) == s["n_cells"]
    for c, (image, protein, cell, x, y, probs) in zip(cells, expect):
        assert (c["image"], c["protein"], int(c["cell"])) == (image, protein, cell)
        assert float(c["x"]) == pytest.approx(x, abs=0.006) and float(c["y"]) == pytest.approx(y, abs=0.006)
        got = np.array([float(c[f"prob_{k}"]) for k in range(12)])
        np.testing.assert_allclose(got, probs, atol=2e-6)
        assert int(c["pred"]) == int(np.argmax(got)) and c["class"] == CLASS_NAMES[int(c["pred"])]
    # proteins: the Dirichlet posterior of protein_level.py, over all the protein's micrographs
    prots = _csv(out / "proteins.csv")
    key = [f"plate{int(c['plate']):02d}/{c['protein']}" for c in cells]
    ids, n_cells, alpha, theta = dirichlet_map(np.array([[float(c[f"prob_{k}"]) for k in range(12)] for c in cells]),
                                               key)
    by_key = {f"plate{int(p['plate']):02d}/{p['protein']}": p for p in prots}
    assert len(prots) == len(rows) + 1 == s["n_proteins"]  # the second field is the first's protein
    assert by_key[f"plate{int(rows[0]['plate']):02d}/{rows[0]['protein']}"]["n_images"] == "2"
    for i, k in enumerate(ids):
        p = by_key[k]
        post = np.array([float(p[f"post_{j}"]) for j in range(12)])
        np.testing.assert_allclose(post, theta[i], rtol=1e-5, atol=1e-7)  # cells.csv holds 6 digits
        order = np.argsort(-theta[i], kind="stable")
        assert int(p["n_cells"]) == n_cells[i] and int(p["pred"]) == order[0] and p["class"] == CLASS_NAMES[order[0]]
        assert (p["top1"], p["top2"]) == (CLASS_NAMES[order[0]], CLASS_NAMES[order[1]])
        assert float(p["top2_share"]) == pytest.approx(theta[i][order[1]], rel=1e-5)
        pc = p_call(alpha[i][order[0]], alpha[i][order[1]])
        assert float(p["p_call"]) == pytest.approx(pc, rel=1e-5)
        assert p["few_cells"] == str(int(n_cells[i] < 10))
        assert p["low_confidence"] == str(int(pc < CONFIDENCE))
        assert p["possible_dual"] == str(int(theta[i][order[1]] >= DUAL_SHARE))
        assert p["no_cells"] == "0"
    empty = by_key["plate09/009009000"]
    assert (empty["n_cells"], empty["pred"], empty["class"], empty["no_cells"], empty["few_cells"]) == \
        ("0", "", "", "1", "1")
    images = _csv(out / "images.csv")
    assert [int(r["n_cells"]) for r in images][-1] == 0 and {r["mask"] for r in images} == {"segmented"}
    assert s["images_without_cells"] == [f"{table}:6"] and s["proteins_without_cells"] == ["plate09/009009000"]
    assert s["accuracy"] is None and s["precision_check"] is None
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(s))
    # the report: one gallery strip per protein with cells, each a file beside it; the summary figure
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    strips = [src for src in page.images if src.startswith("gallery/")]
    assert len(strips) == len(ids) and all((out / src).is_file() for src in strips)
    assert "figures/screen_summary.png" in page.images and (out / "figures" / "screen_summary.png").is_file()
    text = " ".join(page.text)
    assert "Proteins without cells" in text and "009009000" in text and "Accuracy against the labels" not in text
    assert "problems" in page.ids and all(f"p{i}" in page.ids for i in range(len(ids)))
    # a strip holds min(cells, 8) crops of 64 px side, ordered by their probability of the protein's call
    import cv2
    for src in strips:
        strip = cv2.imread(str(out / src))
        assert strip.shape[0] == 64 and strip.shape[1] % 64 == 0 and strip.shape[1] // 64 <= 8
    report = (out / "report.html").read_text(encoding="utf-8")
    for i, p in enumerate(prots):
        if p["n_cells"] == "0":
            continue
        mine = [c for c in cells if c["protein"] == p["protein"] and c["plate"] == p["plate"]]
        call = int(p["pred"])
        order = sorted(mine, key=lambda c: -float(c[f"prob_{call}"]))
        picks = np.unique(np.round(np.linspace(0, len(order) - 1, min(8, len(order)))).astype(int))
        want = [f"{c['class']} {float(c['prob_' + c['pred']]):.2f}" for c in (order[k] for k in picks)]
        block = report.split(f'<div class="protein" id="p{i}">')[1].split('<div class="protein"')[0]
        got = re.findall(r'<div class="cap (agree|disagree)"[^>]*>([^<]*)</div>', block)
        assert [g[1] for g in got] == want
        assert [g[0] for g in got] == ["agree" if c["pred"] == p["pred"] else "disagree"
                                       for c in (order[k] for k in picks)]


def test_labels_give_the_main_reports_accuracies(bundle, fields, tmp_path):
    table = _table(tmp_path, fields, labels=True)
    out = tmp_path / "out"
    s = classify_screen(bundle, str(table), str(out), ClassifySettings(n_resamples=500), QUIET)
    cells = _csv(out / "cells.csv")
    assert {"label", "true_class"} <= set(cells[0])
    right = sum(c["pred"] == c["label"] for c in cells)
    acc = s["accuracy"]
    assert (acc["cell_accuracy"]["correct"], acc["cell_accuracy"]["total"]) == (right, len(cells))
    assert acc["cell_accuracy"]["lo"] <= acc["cell_accuracy"]["value"] <= acc["cell_accuracy"]["hi"]
    prots = _csv(out / "proteins.csv")
    called = [p for p in prots if p["n_cells"] != "0"]
    assert acc["protein_accuracy"]["total"] == len(called) == len(prots) - 1
    assert acc["protein_accuracy"]["correct"] == sum(p["pred"] == p["label"] for p in called)
    assert all(p["correct"] == str(int(p["pred"] == p["label"])) for p in called)
    assert acc["protein_accuracy_min10"]["total"] == sum(int(p["n_cells"]) >= 10 for p in called)
    assert prots[-1]["true_class"] == "vacuole" and prots[-1]["correct"] == ""
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Accuracy against the labels in the images table" in page and "label: " in page
    # a protein given two labels is refused, naming both rows; nothing is written
    d, rows = fields
    shutil.copyfile(d / rows[1]["image"], tmp_path / "other.tif")
    bad = _table(tmp_path, fields, labels=True,
                 extra=[f"{tmp_path / 'other.tif'},{rows[0]['plate']},{rows[0]['protein']},vacuole"])
    with pytest.raises(InputError, match=rf"{bad}:7: protein plate\d\d/{rows[0]['protein']} has label 11 here but "
                                         rf"\d+ on {bad}:\d"):
        classify_screen(bundle, str(bad), str(tmp_path / "out2"), context=QUIET)
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out2.work").exists()


def test_bf16_changes_are_counted_against_fp32(bundle, fields, tmp_path):
    d, rows = fields
    table = tmp_path / "one.csv"
    table.write_text(f"image,protein\n{d / rows[0]['image']},{rows[0]['protein']}\n")
    s = classify_screen(bundle, str(table), str(tmp_path / "bf16"),
                        ClassifySettings(inference=InferenceSettings(precision="bf16"), compare_fp32=True), QUIET)
    image = tifffile.imread(d / rows[0]["image"])
    _, _, crops = cells_and_crops(image)
    b = read_bundle(bundle)
    fp32, bf16 = b.predictor()(crops), b.predictor(precision="bf16")(crops)
    cells = _csv(tmp_path / "bf16" / "cells.csv")
    got = np.array([[float(c[f"prob_{k}"]) for k in range(12)] for c in cells])
    np.testing.assert_allclose(got, bf16, atol=2e-6)
    pc = s["precision_check"]
    assert pc["cells_changed"] == int(np.sum(fp32.argmax(1) != bf16.argmax(1))) and pc["cells"] == len(crops)
    assert pc["max_abs_prob_difference"] == pytest.approx(float(np.abs(fp32 - bf16).max()), abs=1e-6)
    assert 0 < pc["max_abs_prob_difference"] < 0.1
    # the one protein's call (Dirichlet MAP over its cells) from each precision's probabilities
    calls = [int(np.argmax(dirichlet_map(p, ["one"] * len(p))[3][0])) for p in (fp32, bf16)]
    assert pc["proteins"] == 1 and pc["proteins_changed"] == int(calls[0] != calls[1])
    assert int(_csv(tmp_path / "bf16" / "proteins.csv")[0]["pred"]) == calls[1]
    assert cells[0]["plate"] == "" and _csv(tmp_path / "bf16" / "proteins.csv")[0]["plate"] == ""
    assert "Precision check: with bf16" in (tmp_path / "bf16" / "report.html").read_text(encoding="utf-8")


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True)


def test_script_bad_input_skip_bad_and_bundle_checks(bundle, fields, tmp_path):
    d, rows = fields
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    tifffile.imwrite(tmp_path / "deep.tif", (tifffile.imread(d / rows[0]["image"]).astype(np.uint16) * 16))
    table = _table(tmp_path, fields, extra=["broken.tif,1,001099000", "deep.tif,1,001098000",
                                            f"{d / rows[1]['image']},1,"])
    out = tmp_path / "out"
    # the table is checked before any micrograph is read: the row without a protein comes first
    r = _run("--model", bundle, "--images", table, "--out", out)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"classify_screen.py: error: {table}:9: protein id '' must be non-empty"), r.stderr
    assert not out.exists()
    short = tmp_path / "short.csv"
    short.write_text("".join(table.read_text().splitlines(keepends=True)[:-1]))
    r = _run("--model", bundle, "--images", short, "--out", out, "--scheduler", "none")
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"classify_screen.py: error: {short}:7: ") and \
        "broken.tif: corrupt or truncated" in lines[0]
    assert not out.exists()
    # the stopped run's finished chunks wait in OUT.work; another table is refused until --restart
    assert (tmp_path / "out.work" / "run.json").is_file()
    r = _run("--model", bundle, "--images", table, "--out", out, "--skip-bad", "--scheduler", "none")
    assert r.returncode == 2 and "out.work: holds an unfinished run with another images table" in r.stderr, r.stderr
    r = _run("--model", bundle, "--images", table, "--out", out, "--skip-bad", "--resamples", 100,
             "--scheduler", "none", "--restart")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "out.work").exists() and not list(tmp_path.glob(".out.*"))
    assert "3 rows skipped (rejects.txt)" in r.stdout and "1 micrograph(s) without cells" in r.stdout
    rejects = (out / "rejects.txt").read_text().splitlines()
    assert [x.split("\t")[0] for x in rejects] == [f"{table}:{n}" for n in (9, 7, 8)]
    assert "protein id ''" in rejects[0] and "16-bit image" in rejects[2] and "--bits" in rejects[2]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_rejected"] == 3 and s["n_images"] == len(rows) + 2
    assert "Check these first." in (out / "report.html").read_text(encoding="utf-8")
    # a damaged bundle is refused before anything is read or written
    bad = tmp_path / "bad_model"
    shutil.copytree(bundle, bad)
    with open(bad / "classes.txt", "a") as f:
        f.write("lipid droplet;12\n")
    r = _run("--model", bad, "--images", table, "--out", tmp_path / "out3", "--skip-bad")
    assert r.returncode == 2 and "classes.txt: sha256" in r.stderr and not (tmp_path / "out3").exists()
    r = _run("--model", tmp_path / "nowhere", "--images", table, "--out", tmp_path / "out3")
    assert r.returncode == 2 and "no such folder" in r.stderr


def test_report_renders_in_headless_chromium(bundle, fields, tmp_path, chromium_path):
    """A real browser loads every strip and figure; each caption sits under its own cell of the strip."""
    table = _table(tmp_path, fields, labels=True)
    out = tmp_path / "out"
    s = classify_screen(bundle, str(table), str(out), ClassifySettings(n_resamples=100), QUIET)
    probe = out / "probe.html"
    script = ("<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
              "const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;let bad=0;"
              "document.querySelectorAll('.strip').forEach(st=>{const img=st.querySelector('img');"
              "const x0=img.getBoundingClientRect().left;const w=img.naturalHeight*2;"
              "if(Math.abs(img.getBoundingClientRect().width-img.naturalWidth*2)>0.5)bad++;"
              "st.querySelectorAll('.cap').forEach((c,k)=>{if(Math.abs(c.getBoundingClientRect().left-x0-k*w)>0.5)"
              "bad++;});});document.body.setAttribute('data-loaded',ok+'/'+imgs.length+'/'+bad);});</script>")
    probe.write_text((out / "report.html").read_text(encoding="utf-8").replace("</body>", script + "</body>"),
                     encoding="utf-8")
    res = subprocess.run([chromium_path, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    n = (out / "report.html").read_text(encoding="utf-8").count("<img ")
    assert n >= s["n_proteins_called"] + 2  # strips, the summary figure, the segmentation outlines
    assert f'data-loaded="{n}/{n}/0"' in res.stdout


def test_screen_cells_read_crops_by_position_without_a_map(tmp_path):
    """The report reads a few crops of every protein from the run's crops file by position (issue 21:
    a memory map's touched pages would stay resident and grow with the screen)."""
    from deepyeast.analysis.classify_screen import ScreenCells
    from deepyeast.utils.io import StepFailed

    rng = np.random.default_rng(0)
    n = 37
    crops = rng.integers(0, 256, (n, 2, 8, 8), dtype=np.uint8)
    path = tmp_path / "crops.u8"
    path.write_bytes(crops.tobytes())
    z = np.zeros(n)
    cells = ScreenCells(image=np.full(n, "a.tif", object), protein=np.full(n, "p", object),
                        plate=np.full(n, -1), key=np.full(n, "p", object), cell=np.arange(n), x=z, y=z,
                        area=np.ones(n, np.int64), padded=np.zeros(n, bool), label=np.full(n, -1),
                        probs=np.zeros((n, 12), np.float32), pred=np.zeros(n, np.int64), probs_fp32=None,
                        crops_path=str(path), crop_shape=(2, 8, 8), images=[])
    for index in ([0], [n - 1], [5, 3, 5, 36, 0], np.arange(n)[::-1], []):
        got = cells.read_crops(index)
        assert got.dtype == np.uint8 and got.shape == (len(index), 2, 8, 8)
        np.testing.assert_array_equal(got, crops[np.asarray(index, np.int64)])
    with pytest.raises(IndexError):
        cells.read_crops([n])
    path.write_bytes(crops[:10].tobytes())  # a file cut short
    with pytest.raises(StepFailed, match="ends before cell 20"):
        cells.read_crops([20])
