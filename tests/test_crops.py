"""Cropping cells out of micrographs: known centres, masks, borders and bad input."""

import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tifffile

from deepyeast.data import crop_cells as crops, micrographs
from deepyeast.data.crop_cells import SplitRule
from deepyeast.data.micrographs import MicrographFormat
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
                                fmt=MicrographFormat((2, 0)), border="pad", splits=SplitRule(seed=3))
    assert summary["n_crops"] == 18 and summary["n_rejected"] == 0
    assert summary["n_padded"] == 6 and summary["n_skipped_border"] == 0  # the third cell of each image
    report, ok = check_splits({s: str(out / f"HOwt_{s}.txt") for s in ("train", "val", "test")})
    # split by protein: no protein in two lists (this screen's few proteins leave some lists empty, which
    # check_splits reports as a problem of its own)
    assert all("list is empty" in e for e in report["errors"]), report["errors"]
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
    s = crops.crop_screen(str(images), str(tmp_path / "out"), centres_csv=str(centres), fmt=MicrographFormat((2, 0)),
                          border="skip")
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
    s = crops.crop_screen(str(images), str(tmp_path / "out16"), fmt=MicrographFormat((2, 0), 12), skip_bad=True)
    assert s["n_crops"] == 6 and s["n_rejected"] == 4


def test_failed_crop_run_keeps_previous_output(tmp_path):
    rng = np.random.default_rng(4)
    images, _, _ = _write_screen(tmp_path, rng, 2, use_masks=True)
    out = tmp_path / "out"
    crops.crop_screen(str(images), str(out), fmt=MicrographFormat((2, 0)))
    before = sorted(p.name for p in out.rglob("*"))
    (tmp_path / "im1.tif").write_bytes(b"garbage")
    with pytest.raises(InputError, match="im1.tif"):
        crops.crop_screen(str(images), str(out), fmt=MicrographFormat((2, 0)))
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


# --------------------------------------------------------------------------- formats labs use (issue 13)

def _marker_protein(rng, centres, shape=(120, 150)):
    img = _micrograph(rng, shape, centres)
    return img[0], img[1]


def test_micrograph_formats_give_the_same_two_channels(tmp_path):
    rng = np.random.default_rng(5)
    marker, protein = _marker_protein(rng, [(60, 70)])
    want = np.stack([marker, protein])
    # OME-TIFF with singleton T and Z (as microscope software writes it)
    tifffile.imwrite(tmp_path / "a.ome.tif", want[None, :, None], ome=True, metadata={"axes": "TCZYX"})
    # ImageJ hyperstack, 12-bit data in 16 bits, channels swapped
    tifffile.imwrite(tmp_path / "b.tif", (want[::-1].astype(np.uint16) << 4)[None, None], imagej=True,
                     metadata={"axes": "TZCYX"})
    # RGB TIFF (samples axis) and a plain 2-page stack
    tifffile.imwrite(tmp_path / "c.tif", np.dstack([marker, protein, np.zeros_like(marker)]), photometric="rgb")
    tifffile.imwrite(tmp_path / "d.tif", want, photometric="minisblack")
    # two single-channel files: TIFF written by PIL, 16-bit PNG
    from PIL import Image
    Image.fromarray(marker).save(tmp_path / "m.tif")
    cv2.imwrite(str(tmp_path / "p.png"), protein.astype(np.uint16) << 4)
    with tifffile.TiffFile(tmp_path / "a.ome.tif") as t:
        assert t.is_ome and t.series[0].get_axes(False).startswith("TCZ")
    assert np.array_equal(micrographs.read_micrograph(str(tmp_path / "a.ome.tif")), want)
    assert np.array_equal(micrographs.read_micrograph(str(tmp_path / "b.tif"), MicrographFormat((1, 0), 12)), want)
    assert np.array_equal(micrographs.read_micrograph(str(tmp_path / "c.tif")), want)
    assert np.array_equal(micrographs.read_micrograph(str(tmp_path / "d.tif")), want)
    assert np.array_equal(micrographs.read_micrograph_pair(str(tmp_path / "m.tif"), str(tmp_path / "p.png"), bits=12), want)


def test_stacks_that_are_not_one_plane_are_refused(tmp_path):
    rng = np.random.default_rng(6)
    z = rng.integers(0, 255, (3, 2, 50, 60), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "z.ome.tif", z, ome=True, metadata={"axes": "ZCYX"})
    with pytest.raises(InputError, match=r"z\.ome\.tif: TIFF has 3 Z planes .*maximum projection"):
        micrographs.read_micrograph(str(tmp_path / "z.ome.tif"))
    tifffile.imwrite(tmp_path / "t.tif", z[:, None], imagej=True, metadata={"axes": "TZCYX"})
    with pytest.raises(InputError, match=r"t\.tif: TIFF has 3 time points"):
        micrographs.read_micrograph(str(tmp_path / "t.tif"))
    with tifffile.TiffWriter(tmp_path / "two.ome.tif", ome=True) as w:  # two positions in one file
        w.write(z[0], metadata={"axes": "CYX"})
        w.write(z[1], metadata={"axes": "CYX"})
    with pytest.raises(InputError, match=r"two\.ome\.tif: TIFF holds 2 image series"):
        micrographs.read_micrograph(str(tmp_path / "two.ome.tif"))
    tifffile.imwrite(tmp_path / "one.tif", z[0, 0])
    with pytest.raises(InputError, match=r"one\.tif: single-channel image; need two channels"):
        micrographs.read_micrograph(str(tmp_path / "one.tif"))
    with pytest.raises(InputError, match=r"z\.ome\.tif.*marker image must be a single-channel image"):
        tifffile.imwrite(tmp_path / "z.ome.tif", z[0], ome=True, metadata={"axes": "CYX"})
        micrographs.read_micrograph_pair(str(tmp_path / "z.ome.tif"), str(tmp_path / "one.tif"))


def test_bits_never_saturate_silently():
    # 8x8 (smaller images are refused as too small for a micrograph before the bit depth is looked at);
    # the values that matter sit in the first two pixels of each channel, the rest are 0
    twelve = np.zeros((2, 8, 8), np.uint16)
    twelve[:, 0, :2] = [[0, 4095], [16, 100]]
    with pytest.raises(InputError, match=r"x: 16-bit image \(max value 4095, so --bits 12 or more\)"):
        micrographs.to_two_channel(twelve, "x")
    with pytest.raises(InputError, match=r"x: values up to 4095 do not fit --bits 8 \(max 255\).*pass --bits 12"):
        micrographs.to_two_channel(twelve, "x", MicrographFormat(bits=8))
    with pytest.raises(InputError, match=r"--bits 10 \(max 1023\)"):
        micrographs.to_two_channel(twelve, "x", MicrographFormat(bits=10))
    for bits, first in ((12, [[0, 255], [1, 6]]), (16, [[0, 15], [0, 0]])):
        out = micrographs.to_two_channel(twelve, "x", MicrographFormat(bits=bits))
        assert out[:, 0, :2].tolist() == first and not out[:, 1:].any() and not out[:, 0, 2:].any()
    eight = twelve.astype(np.uint8)
    assert np.array_equal(micrographs.to_two_channel(eight, "x", MicrographFormat(bits=12)), eight)  # bits apply to 16-bit data only


def test_crop_centre_outside_the_image_is_refused():
    img = np.zeros((2, 100, 80), np.uint8)
    with pytest.raises(InputError, match=r"centre 1 \(x=80, y=10\) lies outside the 80x100 image"):
        crops.crop_cells(img, np.array([[50, 40], [10, 80]], float))
    with pytest.raises(InputError, match="outside"):
        crops.crop_cells(img, np.array([[-0.6, 40]]))
    out, kept, padded = crops.crop_cells(img, np.array([[-0.4, 79.4]]))  # rounds onto the corner pixel
    assert list(kept) == [0] and list(padded) == [True]


def _pair_screen(tmp_path, rng):
    """Two proteins, 3 micrographs as marker/protein file pairs; centres in CellProfiler's layout."""
    cs = [(40, 50), (80, 100)]
    names = []
    for i in range(3):
        m, p = _marker_protein(rng, cs)
        tifffile.imwrite(tmp_path / f"f{i}_mcherry.tif", m)
        tifffile.imwrite(tmp_path / f"f{i}_gfp.tif", p)
        names.append((f"f{i}_mcherry.tif", f"f{i}_gfp.tif"))
    (tmp_path / "images.csv").write_text(
        "marker_image,protein_image,plate,protein,label\n"
        f"{names[0][0]},{names[0][1]},1,001001000,nucleus\n"
        f"{names[1][0]},{names[1][1]},1,001001000,Nucleus\n"
        f"{names[2][0]},{names[2][1]},1,001002000,ER\n")
    # CellProfiler ExportToSpreadsheet, per-object table: ImageNumber = row of the images table
    lines = ["ImageNumber,ObjectNumber,Cells_Location_Center_X,Cells_Location_Center_Y,Cells_AreaShape_Area"]
    lines += [f"{i + 1},{k + 1},{x},{y},300" for i in range(3) for k, (y, x) in enumerate(cs)]
    (tmp_path / "Cells.csv").write_text("\n".join(lines) + "\n")
    return cs


def test_pair_files_cellprofiler_centres_and_class_names(tmp_path):
    rng = np.random.default_rng(7)
    _pair_screen(tmp_path, rng)
    s = crops.crop_screen(str(tmp_path / "images.csv"), str(tmp_path / "out"), centres_csv=str(tmp_path / "Cells.csv"))
    assert s["n_crops"] == 6 and s["n_rejected"] == 0 and s["images_without_cells"] == []
    with open(tmp_path / "out" / "crops.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["class"]) for r in rows] == [("8", "nucleus")] * 4 + [("3", "ER")] * 2
    assert [r["image"] for r in rows[::2]] == ["f0_mcherry.tif", "f1_mcherry.tif", "f2_mcherry.tif"]
    assert [int(r["cell"]) for r in rows] == [1, 2] * 3
    for r in rows:
        c = read_crop(str(tmp_path / "out" / r["path"]))
        assert c[0, 32, 32] >= 200 and c[1, 32, 32] >= 254
    # the same centres with our column names give the same crops
    lines = (tmp_path / "Cells.csv").read_text().splitlines()
    ours = ["image,cell,x,y"] + [f"f{int(l.split(',')[0]) - 1}_mcherry.tif,{','.join(l.split(',')[1:4])}"
                                 for l in lines[1:]]
    (tmp_path / "xy.csv").write_text("\n".join(ours) + "\n")
    crops.crop_screen(str(tmp_path / "images.csv"), str(tmp_path / "out2"), centres_csv=str(tmp_path / "xy.csv"))
    assert (tmp_path / "out2" / "crops.csv").read_text() == (tmp_path / "out" / "crops.csv").read_text()


def test_screen_bad_input_named_by_file_and_row(tmp_path):
    rng = np.random.default_rng(8)
    _pair_screen(tmp_path, rng)
    images, centres = tmp_path / "images.csv", tmp_path / "Cells.csv"
    # channels of different sizes; a centre outside its image; a protein whose only image has no cells
    tifffile.imwrite(tmp_path / "f1_gfp.tif", np.zeros((60, 150), np.uint8))
    text = centres.read_text().replace("1,2,100,80,", "1,2,100,180,")
    text = "\n".join(l for l in text.splitlines() if not l.startswith("3,")) + "\n"
    centres.write_text(text)
    cmd = [sys.executable, "data_prep/crop_cells.py", str(images), str(tmp_path / "out"), "--centres", str(centres)]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "Cells.csv:3: centre x=100, y=180 lies outside" in r.stderr and "f0_mcherry.tif (150x120)" in r.stderr
    r = subprocess.run(cmd + ["--skip-bad"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import json
    s = json.loads(r.stdout)
    assert s["n_crops"] == 1 and s["n_rejected"] == 3
    assert s["images_without_cells"] == [f"{images}:4"]
    rejects = (tmp_path / "out" / "rejects.txt").read_text().splitlines()
    assert rejects[0].startswith(f"{centres}:3\t") and "lies outside" in rejects[0]
    assert rejects[1].startswith(f"{images}:3\t") and "f1_gfp.tif: protein image is 150x60 but marker image" \
        in rejects[1]
    assert rejects[2].startswith(f"{images}:4\t") and "protein plate01/001002000 has no cells" in rejects[2]
