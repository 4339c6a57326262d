"""Quality control a person can see (analysis/qc.py, analysis/screen_report.py): which micrographs the QC
flags, the plate maps of cells and flagged cells per well, segmentation outlines drawn where the mask's
labels change, and a classified screen's report with its heat maps and outlines loading in a real browser.
"""

import json
import os
import subprocess

import numpy as np
import pytest
import tifffile

from _bundles import make_bundle
from _data_helpers import csv_rows as _csv, tiny_screen
from deepyeast.analysis.classify_screen import ClassifySettings, classify_screen
from deepyeast.analysis.qc import QC_COLUMNS, outline_sample, plate_maps, qc_flags, well_position
from deepyeast.analysis.screen_report import OUTLINE_COLOR, render_outlines
from deepyeast.utils.run_context import RunContext


def test_qc_flags_pick_the_outliers_on_their_suspicious_side():
    rng = np.random.default_rng(0)
    n = 20
    v = {"n_cells": rng.normal(60, 5, n), "focus": rng.normal(400, 30, n), "saturated": np.zeros(n),
         "background_marker": rng.normal(20, 1, n), "background_protein": rng.normal(12, 1, n)}
    v["focus"][3] = 400 / 20      # blurred
    v["focus"][4] = 400 * 20      # sharper than the rest: not suspicious
    v["n_cells"][5] = 0           # no cells
    v["n_cells"][6] = 200         # crowded: not suspicious
    v["saturated"][7] = 0.05      # 5% clipped
    v["saturated"][8] = 0.005     # under 1%: not flagged
    v["background_marker"][9] = 60   # bright marker background
    v["background_protein"][10] = 2  # dark background: not suspicious
    v["focus"][11] = np.nan       # not measured: not flagged
    flags = qc_flags(v)
    assert {i: f for i, f in enumerate(flags) if f} == {3: "focus", 5: "n_cells", 7: "saturated",
                                                        9: "background_marker"}
    # with fewer micrographs than the outlier rule needs, only the absolute rules flag
    few = {k: a[[3, 5, 7, 9]] for k, a in v.items()}
    assert qc_flags(few) == ["", "n_cells", "saturated", ""]
    # the report's sample: the most suspicious by each measure in turn, each micrograph once
    picked = outline_sample(v, per_measure=2, most=10)
    assert picked[:4] == [(5, "n_cells"), (int(np.argsort(v["n_cells"])[1]), "n_cells"), (3, "focus"),
                          (int(np.argsort(np.nan_to_num(v["focus"], nan=np.inf))[1]), "focus")]
    assert [m for _, m in picked].count("saturated") == 2 and picked[4][0] == 7
    assert len({i for i, _ in picked}) == len(picked) <= 10


def test_wells_are_placed_on_the_smallest_standard_plate():
    assert [well_position(w) for w in ("A1", "B03", "h12", "P24", "AF48", "A/1", "C_7")] == \
        [(0, 0), (1, 2), (7, 11), (15, 23), (31, 47), (0, 0), (2, 6)]
    assert [well_position(w) for w in ("", None, "A0", "12", "well3", "A1B")] == [None] * 6
    images = [dict(plate=1, well="A1", n_cells=10), dict(plate=1, well="A1", n_cells=5),
              dict(plate=1, well="H12", n_cells=7), dict(plate=2, well="I1", n_cells=3),
              dict(plate=2, well="ctrl", n_cells=4), dict(plate=3, well="", n_cells=9)]
    maps = plate_maps(images, [1, 2, 0, 3, 0, 9])
    assert [m["plate"] for m in maps] == [1, 2]  # plate 3 names no well
    one, two = maps
    assert one["shape"] == (8, 12) and two["shape"] == (16, 24)  # I is the ninth row: a 384-well plate
    assert one["cells"][0, 0] == 15 and one["flagged"][0, 0] == 3 and one["cells"][7, 11] == 7
    assert np.isnan(one["cells"]).sum() == 96 - 2
    assert two["cells"][8, 0] == 3 and two["unplaced"] == ["ctrl"]


def test_outlines_are_drawn_where_the_labels_change():
    micro = np.zeros((2, 40, 60), np.uint8)
    micro[0, 5:15, 5:15] = 200
    micro[1] = 50
    mask = np.zeros((40, 60), np.int64)
    mask[5:15, 5:15] = 1
    mask[5:15, 15:25] = 2  # touching cell 1
    rgb = render_outlines(micro, mask)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    white = np.all(rgb == OUTLINE_COLOR, axis=2)
    edge = np.zeros_like(white)
    for lab in (1, 2):
        m = mask == lab
        inner = m.copy()
        inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        edge |= m & ~inner
    assert np.array_equal(white, edge)  # each cell's border pixels, the shared border on both sides
    assert rgb[10, 10, 0] == 255 and rgb[10, 10, 1] == 255 and rgb[30, 40, 2] == 0
    big = render_outlines(np.repeat(np.repeat(micro, 20, axis=1), 20, axis=2),
                          np.repeat(np.repeat(mask, 20, axis=0), 20, axis=1), side=640)
    assert big.shape == (400, 600, 3)  # 800 x 1200 shrunk by 2


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    return make_bundle(str(tmp / "model"), str(tmp))[0]


def test_report_shows_plate_maps_and_outlines_in_a_browser(bundle, tmp_path_factory, tmp_path, chromium_path):
    """Six micrographs on plate 1 (wells A1, A2, B1 two fields each; the last blurred): QC flags the blurred
    one by focus, the plate map counts each well's cells, and the outlines start with the worst."""
    from scipy.ndimage import gaussian_filter

    src = tiny_screen(tmp_path_factory, jobs=1) / "main" / "fields"
    arrays = [tifffile.imread(src / r["image"]) for r in _csv(src / "images.csv")]
    lines = ["image,plate,well,protein"]
    for i in range(6):
        a = np.rot90(arrays[i % 3], k=i // 3, axes=(1, 2))
        if i == 5:
            a = np.stack([gaussian_filter(c.astype(float), 4) for c in a]).round().astype(np.uint8)
        tifffile.imwrite(tmp_path / f"f{i}.tif", np.ascontiguousarray(a))
        well = ("A1", "A2", "B1")[i // 2]
        lines.append(f"f{i}.tif,1,{well},P{well}")
    (tmp_path / "images.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    s = classify_screen(bundle, str(tmp_path / "images.csv"), str(out), ClassifySettings(n_resamples=50),
                        RunContext(progress=False))
    images = _csv(out / "images.csv")
    assert "focus" in images[5]["qc_flags"].split(";")
    assert s["qc"]["by_measure"]["focus"] >= 1 and s["qc"]["flagged_micrographs"] == sum(bool(r["qc_flags"])
                                                                                         for r in images)
    ood = {r["image"]: int(r["n_ood"]) for r in images}
    cells = _csv(out / "cells.csv")
    assert ood == {r["image"]: sum(c["image"] == r["image"] and c["ood"] == "1" for c in cells) for r in images}
    per_well = {w: sum(int(r["n_cells"]) for r in images if r["well"] == w) for w in ("A1", "A2", "B1")}
    assert {w: sum(c["well"] == w for c in cells) for w in per_well} == per_well
    assert [p["well"] for p in _csv(out / "proteins.csv")] == ["A1", "A2", "B1"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="plates"' in page and "figures/plate_01.png" in page and (out / "figures" / "plate_01.png").is_file()
    outlines = [f for f in sorted(os.listdir(out / "figures")) if f.startswith("outline_")]
    assert len(outlines) == page.count('<figure class="outline"') >= 3
    first_focus = page.split("picked by focus")[0].rsplit("<figcaption>", 1)[1]
    assert "f5.tif" in first_focus  # the blurred micrograph leads the focus picks
    assert json.loads((out / "summary.json").read_text())["qc"]["rule"].startswith("more than 3.5")
    # a real browser loads every figure
    probe = out / "probe.html"
    script = ("<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
              "const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;"
              "document.body.setAttribute('data-loaded',ok+'/'+imgs.length);});</script>")
    probe.write_text(page.replace("</body>", script + "</body>"), encoding="utf-8")
    res = subprocess.run([chromium_path, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    n = page.count("<img ")
    assert f'data-loaded="{n}/{n}"' in res.stdout
