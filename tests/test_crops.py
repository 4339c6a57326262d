"""Cropping cells out of micrographs: known centres, masks, borders and bad input."""

import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tifffile

from deepyeast.data import micrographs as crops
from deepyeast.data.crop_png import read_crop
from deepyeast.data.lists import check_splits, protein_of, read_split_list
from deepyeast.utils.io import InputError

from _data_helpers import REPO_ROOT


def _micrograph(rng, shape=(200, 240), centres=()):
    """Two-channel uint8 micrograph: a distinct bright marker pixel at each centre."""
    img = rng.integers(0, 30, (2,) + shape, dtype=np.uint8)
    for k, (y, x) in enumerate(centres):
        img[0, y, x] = 200 + k
        img[1, y, x] = 255 - k
    return img


def test_crop_cells_known_centres_and_borders():
    rng = np.random.default_rng(0)
    centres = [(100, 120), (40, 50), (10, 230), (180, 30)]
    img = _micrograph(rng, centres=centres)
    out, kept, padded = crops.crop_cells(img, np.array(centres, float), 64, "pad")
    assert out.shape == (4, 2, 64, 64) and out.dtype == np.uint8
    assert list(kept) == [0, 1, 2, 3] and list(padded) == [False, False, True, True]
    for k in range(4):  # the cell's midpoint lands on pixel (32, 32) of its crop
        assert out[k, 0, 32, 32] == 200 + k and out[k, 1, 32, 32] == 255 - k
    assert np.array_equal(out[0], img[:, 68:132, 88:152])
    # padded part is zero, the rest copied
    assert not out[2, :, :, 42:].any() and not out[2, :, :22].any()
    assert np.array_equal(out[2, :, 22:, :42], img[:, 0:42, 198:240])
    skipped, kept2, _ = crops.crop_cells(img, np.array(centres, float) + 0.4, 64, "skip")
    assert list(kept2) == [0, 1] and len(skipped) == 2  # sub-pixel centres round to the nearest pixel


def test_centres_from_mask():
    mask = np.zeros((50, 60), np.uint16)
    mask[10:21, 20:31] = 3  # centre (15, 25)
    mask[30:33, 40:50] = 7  # centre (31, 44.5)
    ids, c = crops.centres_from_mask(mask)
    assert list(ids) == [3, 7]
    np.testing.assert_allclose(c, [[15, 25], [31, 44.5]])


def _write_screen(tmp_path, rng, n_images=6, use_masks=True, fmt="tif", channel_last=False):
    """Micrographs (3 channels: protein, junk, marker) + masks or centres; returns (images.csv, centres.csv, truth)."""
    rows, centres_rows, truth = [], [], {}
    for i in range(n_images):
        cs = [(40, 50), (90, 110), (200, 170)]  # the third reaches past the bottom edge
        img2 = _micrograph(rng, (220, 260), cs)
        img = np.stack([img2[1], np.full_like(img2[0], 7), img2[0]])  # protein=0, junk=1, marker=2
        name = f"im{i}.{fmt}"
        if fmt == "tif":
            if channel_last:
                tifffile.imwrite(tmp_path / name, np.moveaxis(img, 0, -1))
            else:
                tifffile.imwrite(tmp_path / name, img, photometric="minisblack")
        else:
            cv2.imwrite(str(tmp_path / name), np.moveaxis(img, 0, -1)[:, :, ::-1])  # RGB order on disk
        row = dict(image=name, plate=1 + i % 2, protein=f"00{i // 2}001000", label=i // 2 % 12)
        if use_masks:
            mask = np.zeros((220, 260), np.uint16)
            for j, (y, x) in enumerate(cs, 1):
                mask[y - 5:y + 6, x - 5:x + 6] = j
            cv2.imwrite(str(tmp_path / f"mask{i}.png"), mask)
            row["mask"] = f"mask{i}.png"
        else:
            centres_rows += [dict(image=name, x=x, y=y, cell=j + 1) for j, (y, x) in enumerate(cs)]
        rows.append(row)
        truth[name] = (img2, cs)
    with open(tmp_path / "images.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if centres_rows:
        with open(tmp_path / "centres.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["image", "x", "y", "cell"])
            w.writeheader()
            w.writerows(centres_rows)
    return tmp_path / "images.csv", (tmp_path / "centres.csv" if centres_rows else None), truth


@pytest.mark.parametrize("use_masks,fmt,channel_last", [(True, "tif", False), (False, "png", False),
                                                       (False, "tif", True)])
def test_crop_screen_writes_archive_layout(tmp_path, use_masks, fmt, channel_last):
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    src.mkdir()
    images, centres, truth = _write_screen(src, rng, 6, use_masks, fmt, channel_last)
    out = tmp_path / "archive"
    summary = crops.crop_screen(str(images), str(out), centres_csv=str(centres) if centres else None,
                                channels=(2, 0), border="pad", seed=3)
    assert summary["n_crops"] == 18 and summary["n_rejected"] == 0
    assert summary["n_padded"] == 6 and summary["n_skipped_border"] == 0  # the third cell of each image
    report, ok = check_splits({s: str(out / f"HOwt_{s}.txt") for s in ("train", "val", "test")})
    assert ok, report["errors"]  # split by protein
    assert sum(report["splits"][s]["n_cells"] for s in report["splits"]) == 18
    entries, _ = read_split_list(str(out / "HOwt_train.txt"))
    for rel, label in entries:
        assert rel.startswith("plate0") and len(os.path.basename(rel).split("-")) == 4
        c = read_crop(str(out / rel))
        assert c[0, 32, 32] >= 200 and c[1, 32, 32] >= 253  # marker in R, protein in G, centred
    with open(out / "crops.csv") as f:
        rows = list(csv.DictReader(f))
    assert {protein_of(r["path"]) == r["protein"] for r in rows} == {True}
    assert (out / "HOwt_doc.txt").read_text().startswith("label;label_idx\ncell periphery;0\n")


def test_crop_screen_skip_border_and_given_splits(tmp_path):
    rng = np.random.default_rng(2)
    images, centres, _ = _write_screen(tmp_path, rng, 4, use_masks=False, fmt="tif")
    text = images.read_text().splitlines()
    text[0] += ",split"
    for i in range(1, len(text)):
        text[i] += "," + ("train", "train", "test", "test")[i - 1]
    images.write_text("\n".join(text) + "\n")
    s = crops.crop_screen(str(images), str(tmp_path / "out"), centres_csv=str(centres), channels=(2, 0), border="skip")
    assert s["n_crops"] == 8 and s["n_skipped_border"] == 4 and s["per_split"] == {"train": 4, "val": 0, "test": 4}


def test_crop_screen_cli_bad_inputs_and_skip_bad(tmp_path):
    rng = np.random.default_rng(3)
    images, _, _ = _write_screen(tmp_path, rng, 6, use_masks=True)
    # 16-bit, single-channel, truncated TIFF, mask of the wrong size, label outside the table
    tifffile.imwrite(tmp_path / "im1.tif", rng.integers(0, 4096, (3, 220, 260), dtype=np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "im2.tif", rng.integers(0, 255, (220, 260), dtype=np.uint8))
    data = (tmp_path / "im3.tif").read_bytes()
    (tmp_path / "im3.tif").write_bytes(data[: len(data) // 3])
    cv2.imwrite(str(tmp_path / "mask4.png"), np.zeros((100, 100), np.uint16))
    lines = images.read_text().splitlines()
    lines[6] = lines[6].replace(",2,mask5.png", ",12,mask5.png")
    images.write_text("\n".join(lines) + "\n")
    expected = {"im1.tif": "16-bit", "im2.tif": "single-channel", "im3.tif": "truncated TIFF",
                "mask4.png": "mask is 100x100 but", "images.csv:7": "label 12 outside the class table"}
    cmd = [sys.executable, "data_prep/crop_cells.py", str(images), str(tmp_path / "out"), "--channels", "2", "0"]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "error:" in r.stderr and not (tmp_path / "out").exists()
    assert any(name in r.stderr and why in r.stderr for name, why in expected.items())
    r = subprocess.run(cmd + ["--skip-bad"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import json
    summary = json.loads(r.stdout)
    assert summary["n_rejected"] == 5 and summary["n_crops"] == 3
    rejects = (tmp_path / "out" / "rejects.txt").read_text()
    for name, why in expected.items():
        assert name in rejects and why in rejects, (name, rejects)
    # with --bits the 16-bit micrograph is accepted
    s = crops.crop_screen(str(images), str(tmp_path / "out16"), channels=(2, 0), bits=12, skip_bad=True)
    assert s["n_crops"] == 6 and s["n_rejected"] == 4


def test_failed_crop_run_keeps_previous_output(tmp_path):
    rng = np.random.default_rng(4)
    images, _, _ = _write_screen(tmp_path, rng, 2, use_masks=True)
    out = tmp_path / "out"
    crops.crop_screen(str(images), str(out), channels=(2, 0))
    before = sorted(p.name for p in out.rglob("*"))
    (tmp_path / "im1.tif").write_bytes(b"garbage")
    with pytest.raises(InputError, match="im1.tif"):
        crops.crop_screen(str(images), str(out), channels=(2, 0))
    assert sorted(p.name for p in out.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_assign_splits_by_protein_follows_fractions():
    rng = np.random.default_rng(0)
    cells = {f"plate01/{i:03d}": int(rng.integers(5, 80)) for i in range(300)}
    labels = {p: i % 12 for i, p in enumerate(cells)}
    a = crops.assign_splits(cells, labels, (0.7, 0.15, 0.15), seed=1)
    assert a == crops.assign_splits(cells, labels, (0.7, 0.15, 0.15), seed=1)
    tot = {s: sum(n for p, n in cells.items() if a[p] == s) for s in ("train", "val", "test")}
    assert abs(tot["train"] / sum(cells.values()) - 0.7) < 0.03
