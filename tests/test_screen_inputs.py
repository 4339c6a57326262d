"""Inputs as screens are stored (analysis/classify_screen.py): OME-Zarr NGFF images and HCS plates written
by ome-zarr-py's own writer, and a folder of single-channel micrographs named by a filename pattern, give
the cells and calls of the same micrographs named in an images table of TIFF files; plate and well reach
images.csv, cells.csv and proteins.csv; bad input is one line naming the row or file (exit 2), or with
--skip-bad a line of rejects.txt.
"""

import os
import shutil

import numpy as np
import pytest
import tifffile
import zarr

from _bundles import make_bundle
from _data_helpers import csv_rows as _csv, tiny_fields
from _steps import one_error_line, run_step
from deepyeast.analysis.classify_screen import ClassifySettings, classify_screen
from deepyeast.data.micrographs import MicrographFormat
from deepyeast.data.screen_tables import read_images_table
from deepyeast.data.screen_folder import ChannelNames, ImageFolder
from deepyeast.data.segment_cells import CellFinding
from deepyeast.utils.io import InputError
from deepyeast.utils.run_context import RunContext

QUIET = RunContext(progress=False)

SCRIPT = "analysis/classify_screen.py"
WELLS = (("A", "1"), ("B", "3"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    return make_bundle(str(tmp / "model"), str(tmp))[0]


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    """The tiny screen's three saved fields as uint8 2 x H x W arrays (marker, protein), and a fourth: the
    first turned by 90 degrees (four distinct micrographs)."""
    arrays = tiny_fields(tmp_path_factory)
    return arrays + [np.ascontiguousarray(np.rot90(arrays[0], axes=(1, 2)))]


@pytest.fixture(scope="module")
def reference(bundle, fields, tmp_path_factory):
    """The four micrographs as TIFF files in an images table (plate 1, wells A1 A1 B3 B3, proteins by well):
    the run every other input must reproduce.  Returns (folder, output folder)."""
    d = tmp_path_factory.mktemp("tiff")
    lines = ["image,plate,well,protein"]
    for i, arr in enumerate(fields):
        tifffile.imwrite(d / f"f{i}.tif", arr)
        r, c = WELLS[i // 2]
        lines.append(f"f{i}.tif,1,{r}{c},{r}{c}")
    (d / "images.csv").write_text("\n".join(lines) + "\n")
    classify_screen(bundle, str(d / "images.csv"), str(d / "out"), ClassifySettings(n_resamples=50), QUIET)
    return d, d / "out"


def _write_plate(path, fields, fmt=None):
    """An HCS plate with ome-zarr-py's writer: wells A/1 and B/3, two fields each (czyx uint8, one z plane)."""
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    kw = {} if fmt is None else {"fmt": fmt}
    root = zarr.open_group(str(path), mode="w", **({} if fmt is None else {"zarr_format": 2}))
    write_plate_metadata(root, ["A", "B"], ["1", "2", "3"], [f"{r}/{c}" for r, c in WELLS], field_count=2,
                         name="plate 1", **kw)
    for w, (r, c) in enumerate(WELLS):
        well = root.require_group(r).require_group(c)
        write_well_metadata(well, [{"path": "0"}, {"path": "1"}], **kw)
        for f in range(2):
            write_image(fields[2 * w + f][:, None], well.require_group(str(f)), axes="czyx", scaler=None,
                        scale_factors=[], **kw)


def _protein_tables(out):
    """cells.csv without the image column (how each input names a micrograph differs), proteins.csv, and
    images.csv without image (QC and counts), each as a list of dicts."""
    cells = [{k: v for k, v in r.items() if k != "image"} for r in _csv(out / "cells.csv")]
    images = [{k: v for k, v in r.items() if k != "image"} for r in _csv(out / "images.csv")]
    return cells, _csv(out / "proteins.csv"), images


def test_ome_zarr_plate_image_and_series_give_the_cells_of_the_same_tiffs(bundle, fields, reference, tmp_path):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    ref_dir, ref_out = reference
    _write_plate(tmp_path / "plate.zarr", fields)  # NGFF 0.5, zarr v3
    _write_plate(tmp_path / "plate04.zarr", fields, FormatV04())  # NGFF 0.4, zarr v2
    # one image (tczyx, 12-bit in uint16, with channel labels) and an image series (bioformats2raw layout)
    g = zarr.open_group(str(tmp_path / "one.zarr"), mode="w", zarr_format=2)
    window = {"start": 0, "end": 4095, "min": 0, "max": 65535}
    write_image((fields[2].astype(np.uint16) << 4)[None, :, None], g, axes="tczyx", scaler=None, scale_factors=[],
                fmt=FormatV04(), omero={"channels": [{"label": "RFP", "color": "FF0000", "window": window},
                                                      {"label": "GFP", "color": "00FF00", "window": window}]})
    series = zarr.open_group(str(tmp_path / "series.zarr"), mode="w")
    series.attrs["bioformats2raw.layout"] = 3
    for k in (0, 1):
        write_image(fields[3 * k], series.require_group(str(k)), axes="cyx", scaler=None, scale_factors=[])
    rows = ["plate.zarr#A/1/0,1,A1,", "plate04.zarr,1,A1,", "one.zarr,1,B3,", "series.zarr#1,1,B3,"]
    table = tmp_path / "images.csv"
    table.write_text("image,plate,protein,row,column,field\n" + "\n".join(
        [rows[0] + ",,", rows[1] + "A,1,1", rows[2] + ",,", rows[3] + ",,"]) + "\n")
    recs = read_images_table(str(table), require=("protein",))
    assert [r["image"] for r in recs] == ["plate.zarr#A/1/0", "plate04.zarr#A/1/1", "one.zarr", "series.zarr#1"]
    assert [r["well"] for r in recs] == ["A1", "A1", None, None]
    out = tmp_path / "out"
    s = classify_screen(bundle, str(table), str(out),
                        ClassifySettings(CellFinding(fmt=MicrographFormat(bits=12)), n_resamples=50), QUIET)
    assert s["n_images"] == 4 and not s["rejected"]
    cells, prots, images = _protein_tables(out)
    ref_cells, ref_prots, ref_images = _protein_tables(ref_out)
    # the plate's wells reach the tables; rows 3-4 name no well (an image, a series): the reference's is B3
    for r in cells:
        assert r.pop("well") == ("A1" if r["protein"] == "A1" else "")
    for r in ref_cells:
        assert r.pop("well") == r["protein"]
    assert cells == ref_cells and len(cells) == s["n_cells"] > 20
    assert [(p["plate"], p["well"], p["protein"], p["n_cells"], p["pred"], p["post_0"]) for p in prots] == \
        [(p["plate"], p["well"] if p["protein"] == "A1" else "", p["protein"], p["n_cells"], p["pred"], p["post_0"])
         for p in ref_prots]
    assert [r["well"] for r in images] == ["A1", "A1", "", ""]
    assert [{k: v for k, v in r.items() if k != "well"} for r in images] == \
        [{k: v for k, v in r.items() if k != "well"} for r in ref_images]
    assert [r["image"] for r in _csv(out / "images.csv")] == \
        ["plate.zarr#A/1/0", "plate04.zarr#A/1/1", "one.zarr", "series.zarr#1"]
    # --images plate.zarr: every field of the plate, the well naming the protein (no plate number)
    whole = tmp_path / "whole"
    assert run_step(SCRIPT, "--model", bundle, "--images", tmp_path / "plate.zarr", "--out", whole,
                    "--scheduler", "none", "--resamples", 50) == 0
    assert [r["image"] for r in _csv(whole / "images.csv")] == [f"plate.zarr#{r}/{c}/{f}" for r, c in WELLS
                                                                for f in (0, 1)]

    def without_plate(rows):
        return [{k: v for k, v in r.items() if k not in ("image", "plate")} for r in rows]
    assert without_plate(_csv(whole / "cells.csv")) == without_plate(_csv(ref_out / "cells.csv"))
    assert without_plate(_csv(whole / "proteins.csv")) == without_plate(_csv(ref_out / "proteins.csv"))


def test_ome_zarr_bad_references_are_one_line_naming_the_row(bundle, fields, tmp_path, capsys):
    _write_plate(tmp_path / "plate.zarr", fields)
    tifffile.imwrite(tmp_path / "f.tif", fields[0])
    os.makedirs(tmp_path / "plain.zarr")
    cases = [("plate.zarr#C/1/0", "the plate has no well C/1"),
             ("plate.zarr#A/1/7", "the well has no field '7' (fields: 0, 1)"),
             ("plate.zarr#A/1", "the well holds 2 fields (0, 1); name one"),
             ("plate.zarr", "an HCS plate; name the well"),
             ("plate.zarr/A/1/0#2", "one NGFF image; #2 names a series or field it does not have"),
             ("plain.zarr", "not an OME-Zarr"),
             ("missing.zarr#A/1/0", "not an OME-Zarr")]
    for image, reason in cases:
        table = tmp_path / "images.csv"
        table.write_text(f"image,plate,protein\nf.tif,1,P1\n{image},1,P2\n")
        out = tmp_path / "out"
        code = run_step(SCRIPT, "--model", bundle, "--images", table, "--out", out, "--scheduler", "none")
        assert code == 2, image
        one_error_line(capsys, f"{table}:3: ", reason)
        assert not out.exists() and not (tmp_path / "out.work").exists()
    # with --skip-bad the row is listed and the rest classified
    table.write_text("image,plate,protein\nf.tif,1,P1\nplate.zarr#C/1/0,1,P2\nplate.zarr#B/3/1,1,P3\n")
    code = run_step(SCRIPT, "--model", bundle, "--images", table, "--out", out, "--scheduler", "none", "--skip-bad",
                    "--resamples", 20)
    assert code == 0
    rejects = (out / "rejects.txt").read_text().splitlines()
    assert len(rejects) == 1 and rejects[0].startswith(f"{table}:3\t") and "no well C/1" in rejects[0]
    assert [(r["image"], r["well"]) for r in _csv(out / "images.csv")] == [("f.tif", ""), ("plate.zarr#B/3/1", "B3")]
    # a z stack is refused as a TIFF stack is
    from ome_zarr.writer import write_image
    g = zarr.open_group(str(tmp_path / "stack.zarr"), mode="w")
    write_image(np.stack([fields[0], fields[0]], axis=1), g, axes="czyx", scaler=None, scale_factors=[])
    table.write_text("image,plate,protein\nstack.zarr,1,P1\n")
    shutil.rmtree(out)
    assert run_step(SCRIPT, "--model", bundle, "--images", table, "--out", out, "--scheduler", "none") == 2
    one_error_line(capsys, f"{table}:2: ", "stack.zarr: the image has 2 z planes; give one plane")


def _write_pattern_folder(d, fields, marker="RFP", protein="GFP"):
    """Single-channel TIFFs ``plate01/P1_<well>_<field>_<channel>.tif`` of the four micrographs."""
    os.makedirs(d / "plate01")
    for i, arr in enumerate(fields):
        r, c = WELLS[i // 2]
        for name, k in ((marker, 0), (protein, 1)):
            tifffile.imwrite(d / "plate01" / f"P1_{r}{c}_{i % 2}_{name}.tif", arr[k])
    tifffile.imwrite(d / "plate01" / f"P1_A1_0_DAPI.tif", fields[0][0])  # a third channel, ignored
    (d / "notes.txt").write_text("not a micrograph\n")


PATTERN = "plate{plate}/P1_{well}_{field}_{channel}.tif"


def test_a_pattern_folder_gives_the_cells_of_the_same_table(bundle, fields, reference, tmp_path, capsys):
    _, ref_out = reference
    d = tmp_path / "screen"
    _write_pattern_folder(d, fields)
    out = tmp_path / "out"
    code = run_step(SCRIPT, "--model", bundle, "--images", d, "--pattern", PATTERN, "--out", out,
                    "--scheduler", "none", "--resamples", 50)
    assert code == 0, capsys.readouterr().err
    cells, prots, images = _protein_tables(out)
    ref_cells, ref_prots, ref_images = _protein_tables(ref_out)
    assert cells == ref_cells and images == ref_images
    assert [{k: v for k, v in p.items()} for p in prots] == ref_prots
    assert {(r["plate"], r["well"]) for r in cells} == {("1", "A1"), ("1", "B3")}
    assert [r["image"] for r in _csv(out / "images.csv")] == [f"plate01/P1_{r}{c}_{f}_RFP.tif" for r, c in WELLS
                                                              for f in (0, 1)]
    assert "named by the pattern" in (out / "report.html").read_text(encoding="utf-8")
    # the channels by name when they have no usual one
    d2 = tmp_path / "screen2"
    _write_pattern_folder(d2, fields, marker="ch2", protein="ch1")
    rows = ImageFolder(str(d2), PATTERN, ChannelNames("ch2", "ch1")).rows(lambda w, e: (_ for _ in ()).throw(e))
    assert [(os.path.basename(r["path"]), os.path.basename(r["protein_path"])) for r in rows][0] == \
        ("P1_A1_0_ch2.tif", "P1_A1_0_ch1.tif")
    assert run_step(SCRIPT, "--model", bundle, "--images", d2, "--pattern", PATTERN, "--out", tmp_path / "o2") == 2
    one_error_line(capsys, "P1_A1_0_DAPI.tif: no marker and no protein channel file for this micrograph",
                   "--channel-names MARKER PROTEIN")


def test_pattern_folder_bad_input_is_one_line_naming_the_file(bundle, fields, tmp_path, capsys):
    d = tmp_path / "screen"
    _write_pattern_folder(d, fields)
    os.remove(d / "plate01" / "P1_B3_1_GFP.tif")
    tifffile.imwrite(d / "plate01" / "stray.tif", fields[0][0])
    out = tmp_path / "out"
    argv = ["--model", bundle, "--images", d, "--pattern", PATTERN, "--out", out, "--scheduler", "none"]
    assert run_step(SCRIPT, *argv) == 2
    one_error_line(capsys, f"{d / 'plate01' / 'stray.tif'}: does not match --pattern {PATTERN}")
    assert not out.exists()
    assert run_step(SCRIPT, *argv, "--skip-bad", "--resamples", 20) == 0
    rejects = [ln.split("\t") for ln in (out / "rejects.txt").read_text().splitlines()]
    assert [w for w, _ in rejects] == [str(d / "plate01" / "stray.tif"), str(d / "plate01" / "P1_B3_1_RFP.tif")]
    assert "no protein channel file" in rejects[1][1] and "channels found: RFP" in rejects[1][1]
    assert len(_csv(out / "images.csv")) == 3
    # wrong combinations and patterns: one line each
    for extra, part in [((), "a folder; give --pattern"),
                        (("--pattern", "{well}_{colour}.tif"), "unknown field {colour}"),
                        (("--pattern", "{well}_{field}.tif"), "needs {channel}"),
                        (("--pattern", "P{plate}_{channel}.tif"), "needs {well} or {protein}")]:
        assert run_step(SCRIPT, "--model", bundle, "--images", d, "--out", tmp_path / "o3", *extra) == 2
        one_error_line(capsys, part)
    plates = tmp_path / "letters"
    os.makedirs(plates)
    for ch in ("RFP", "GFP"):
        tifffile.imwrite(plates / f"PX_A1_0_{ch}.tif", fields[0][0])
    assert run_step(SCRIPT, "--model", bundle, "--images", plates, "--pattern", "{plate}_{well}_{field}_{channel}.tif",
                    "--out", tmp_path / "o4") == 2
    one_error_line(capsys, "plate 'PX' is not a whole number")
    empty = tmp_path / "empty"
    os.makedirs(empty)
    with pytest.raises(InputError, match="no file matches"):
        ImageFolder(str(empty), "{well}_{channel}.png").rows(None)


def test_the_napari_reader_opens_an_ome_zarr_image_and_refuses_a_plate(fields, tmp_path):
    from ome_zarr.writer import write_image

    from deepyeast.napari.reader import napari_get_reader

    g = zarr.open_group(str(tmp_path / "one.zarr"), mode="w")
    write_image(fields[1], g, axes="cyx", scaler=None, scale_factors=[])
    reader = napari_get_reader(str(tmp_path / "one.zarr"))
    (data, meta, kind), = reader(str(tmp_path / "one.zarr"))
    assert kind == "image" and meta["channel_axis"] == 0 and meta["name"] == ["one.zarr [c0]", "one.zarr [c1]"]
    assert np.array_equal(data, fields[1])
    assert napari_get_reader(str(tmp_path)) is None  # a folder that is no .zarr is not ours
    _write_plate(tmp_path / "plate.zarr", fields)
    with pytest.raises(InputError, match="an HCS plate; name the well"):
        reader(str(tmp_path / "plate.zarr"))
