"""Bad inputs a new user gives: one line naming the file (and line or row), exit 2 (issue 19's poor messages).

Each case was a raw traceback, a misleading line or silence before.  The step scripts run in this
process through their own command line (``tests/_steps.py``).
"""

import logging
import os

import numpy as np
import pytest
import tifffile

from _cell_crops import write_archive
from _steps import one_error_line, run_step
from deepyeast.data import micrographs, screen_tables
from deepyeast.utils.io import InputError


@pytest.fixture
def screen(tmp_path):
    """Two 2-channel micrographs with round bright cells (the marker) and an images table for them."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:160, :160]
    for i in range(2):
        img = rng.integers(5, 20, (2, 160, 160)).astype(np.uint8)
        for y, x in [(40, 40), (100, 110), (50, 120)]:
            cell = (yy - y) ** 2 + (xx - x) ** 2 < 13 ** 2
            img[0, cell], img[1, cell] = 150, 90
        tifffile.imwrite(tmp_path / f"f{i}.tif", img)
    return tmp_path


# ============================================================================ tables that are not UTF-8

@pytest.mark.parametrize("encoding", ["latin-1", "random"])
def test_a_table_that_is_not_utf8_is_named_with_its_line(screen, capsys, encoding):
    table = screen / "images.csv"
    if encoding == "latin-1":  # Excel's "CSV" on Windows: é as one byte 0xe9
        table.write_bytes("image,plate,protein\nf0.tif,1,YAL001C\nf1.tif,1,caf\u00e9\n".encode("latin-1"))
        where, byte = f"{table}:3:", "byte 0xe9 at column 13"
    else:
        table.write_bytes(np.random.default_rng(3).integers(128, 256, 400, dtype=np.uint8).tobytes())
        where, byte = f"{table}:1:", "byte 0x"
    assert run_step("data_prep/segment_cells.py", table, "--out", screen / "seg") == 2
    one_error_line(capsys, f"{where} the table is not UTF-8 text ({byte}", "save it as UTF-8 (in Excel: CSV UTF-8)")
    assert not (screen / "seg").exists()


def test_a_table_with_a_byte_order_mark_is_read(screen, capsys):
    """Excel's "CSV UTF-8" starts with a byte-order mark; it was refused as having no image column."""
    table = screen / "images.csv"
    table.write_bytes(b"\xef\xbb\xbfimage,plate,protein\r\nf0.tif,1,YAL001C\r\nf1.tif,1,YAL002W\r\n")
    rows = screen_tables.read_images_table(str(table))
    assert [r["image"] for r in rows] == ["f0.tif", "f1.tif"] and rows[1]["protein"] == "YAL002W"
    assert run_step("data_prep/segment_cells.py", table, "--out", screen / "seg") == 0, capsys.readouterr().err
    assert (screen / "seg" / "images.csv").exists()


def test_split_lists_and_class_tables_share_the_rule(tmp_path):
    from deepyeast.data.lists import read_class_doc, read_split_list

    (tmp_path / "HOwt_train.txt").write_bytes(b"\xef\xbb\xbfplate01/1-1-1-1.png 3\n")
    assert read_split_list(tmp_path / "HOwt_train.txt")[0] == [("plate01/1-1-1-1.png", 3)]
    (tmp_path / "doc.txt").write_bytes(b"label;label_idx\ncytoplasm;0\nnucl\xe9us;1\n")
    with pytest.raises(InputError, match=r"doc.txt:3: the class table is not UTF-8 text \(byte 0xe9 at column 5\)"):
        read_class_doc(tmp_path / "doc.txt")


# ============================================================================ micrographs

def test_a_decompression_bomb_is_refused_before_decoding(screen, capsys):
    """A 20000 x 20000 TIFF declares 400 M pixels; its header is read, its pixels never decoded."""
    bomb = screen / "bomb.tif"
    tile = np.zeros((1024, 1024), np.uint8)
    tifffile.imwrite(bomb, (tile for _ in range(20 * 20)), shape=(20000, 20000), dtype=np.uint8, tile=(1024, 1024),
                     compression="zlib")
    assert os.path.getsize(bomb) < 2_000_000
    (screen / "images.csv").write_text("image,plate,protein\nbomb.tif,1,YAL001C\n")
    assert run_step("data_prep/segment_cells.py", screen / "images.csv", "--out", screen / "seg") == 2
    one_error_line(capsys, f"{bomb}: the TIFF declares 20000 x 20000 = 400,000,000 values, more than the 67,108,864")
    with pytest.raises(InputError, match="declares 20000 x 20000"):
        micrographs.read_image_array(str(bomb))  # the single-channel reader (masks, marker files) too
    png = screen / "big.png"  # a PNG header declaring 10000 x 10000 RGB (PIL reads the size, nothing more)
    from PIL import Image
    Image.new("RGB", (10000, 10000)).save(png, compress_level=9)
    with pytest.raises(InputError, match=r"big.png: the image declares 10000 x 10000 x 3 = 300,000,000 values"):
        micrographs.read_channels(str(png))


def test_a_2x1x1_tiff_is_called_too_small_not_single_channel(tmp_path):
    tifffile.imwrite(tmp_path / "tiny.tif", np.zeros((2, 1, 1), np.uint8))
    with pytest.raises(InputError, match=r"tiny.tif: an image of 1 x 2 pixels \(array shape \(1, 2, 1\), channels "
                                         r"first\) is too small for a micrograph of cells"):
        micrographs.read_micrograph(str(tmp_path / "tiny.tif"))


def test_bits_16_on_12_bit_data_warns_once(caplog):
    micrographs._WARNED_BITS.clear()
    img = np.random.default_rng(0).integers(0, 4096, (2, 64, 64)).astype(np.uint16)
    with caplog.at_level(logging.WARNING, logger="deepyeast.data.micrographs"):
        out = micrographs.to_uint8(img, "a.tif", bits=16)
        micrographs.to_uint8(img, "b.tif", bits=16)
        micrographs.to_uint8(img, "c.tif", bits=12)  # the right depth: no warning
    assert out.max() == 15  # what --bits 16 makes of 12-bit data: 16x darker
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0] == ("a.tif: values reach only 4095, far below --bits 16 (max 65535): the crops will be 16x "
                           "darker than the camera's range allows; is it a 12-bit camera (--bits 12)?")


# ============================================================================ options

def test_gpu_without_cuda_is_one_line():
    """``--gpu N`` (classify, predict ...) where CUDA or device N is missing: one line, not a traceback."""
    import torch

    from deepyeast.engine.inference import device_of_gpu

    index = 99  # no machine has it: without CUDA "not available", with CUDA "no such device"
    with pytest.raises(InputError) as err:
        device_of_gpu(index)
    expected = "CUDA is not available here" if not torch.cuda.is_available() else "no such CUDA device"
    assert str(err.value).startswith(f"--gpu {index}: {expected}")
    assert device_of_gpu(None) == "cpu"


# ============================================================================ split lists

def _archive(tmp_path):
    write_archive(str(tmp_path / "a"), {"train": 5, "val": 5, "test": 5}, list_prefix="HOwt")
    return tmp_path / "a"


def test_empty_split_list_is_refused_by_check_splits_and_make_lmdb(tmp_path, capsys):
    a = _archive(tmp_path)
    (a / "HOwt_val.txt").write_text("\n")
    lists = [a / f"HOwt_{s}.txt" for s in ("train", "val", "test")]
    assert run_step("data_prep/check_splits.py", *lists, "--classes", "main") == 1
    assert f"{a / 'HOwt_val.txt'}: the val list is empty" in capsys.readouterr().err
    assert run_step("data_prep/make_lmdb.py", a, "--out", tmp_path / "lmdb") == 2
    one_error_line(capsys, f"{a / 'HOwt_val.txt'}: the val list has no usable 'relpath label' line")
    assert not (tmp_path / "lmdb").exists()


def test_list_line_without_plate_folder_names_list_and_line(tmp_path, capsys):
    a = _archive(tmp_path)
    lines = (a / "HOwt_test.txt").read_text().splitlines()
    lines[2] = "no-plate-1-1.png 3"
    (a / "HOwt_test.txt").write_text("\n".join(lines) + "\n")
    lists = [a / f"HOwt_{s}.txt" for s in ("train", "val", "test")]
    assert run_step("data_prep/check_splits.py", *lists, "--classes", "main") == 1
    assert (f"{a / 'HOwt_test.txt'}:3: 'no-plate-1-1.png': expected 'plateNN/<f1>-<f2>-<f3>-<f4>.png' (plate folder "
            "missing)") in capsys.readouterr().err
    assert run_step("data_prep/make_lmdb.py", a, "--out", tmp_path / "lmdb") == 2
    one_error_line(capsys, f"{a / 'HOwt_test.txt'}:3: 'no-plate-1-1.png'")


def test_reproduce_inputs_are_checked_before_the_first_long_step(tmp_path, capsys):
    """``make reproduce``'s data step (check_splits.py) reads the transfer lists, the non-cell list and the
    mixed-protein table too: a bad one stops the run there, not after training."""
    a = _archive(tmp_path)
    lists = [a / f"HOwt_{s}.txt" for s in ("train", "val", "test")]
    write_archive(str(tmp_path / "t"), {"train": 5, "val": 5, "test": 5})
    transfer = [tmp_path / "t" / f"HOwt_transfer_{s}.txt" for s in ("train", "val", "test")]
    val_cell = (a / "HOwt_val.txt").read_text().split()[0]
    (tmp_path / "noncells.txt").write_text(f"{val_cell}\n")
    assert run_step("data_prep/check_splits.py", *lists, "--classes", "main", "--transfer", *transfer,
                    "--noncells", tmp_path / "noncells.txt") == 0, capsys.readouterr().err
    capsys.readouterr()
    # a missing transfer list
    with pytest.raises(SystemExit) as ex:  # argparse's usage error, as for every missing input
        run_step("data_prep/check_splits.py", *lists, "--transfer", transfer[0], tmp_path / "t" / "gone.txt")
    assert ex.value.code == 2 and "gone.txt: no such file" in capsys.readouterr().err
    # a transfer list with a label outside the transfer table (4 classes)
    bad = tmp_path / "t" / "HOwt_transfer_val.txt"
    bad.write_text(bad.read_text().replace(" 1\n", " 7\n", 1))
    assert run_step("data_prep/check_splits.py", *lists, "--transfer", *transfer) == 2
    one_error_line(capsys, f"transfer lists: {bad}:", "label 7 outside the class table (0..3)")
    # a non-cell that is no validation cell
    (tmp_path / "noncells.txt").write_text(f"{val_cell}\nplate01/elsewhere-1-1-1.png\n")
    assert run_step("data_prep/check_splits.py", *lists, "--noncells", tmp_path / "noncells.txt") == 2
    one_error_line(capsys, f"{tmp_path / 'noncells.txt'}:2: 'plate01/elsewhere-1-1-1.png' is not a cell of")
    # a malformed mixed-protein table
    (a / "mixed.csv").write_text("protein,compartment_a,compartment_b\nplate01/123,nucleus,golgi apparatus\n")
    assert run_step("data_prep/check_splits.py", *lists, "--mixed", a / "mixed.csv") == 2
    one_error_line(capsys, f"{a / 'mixed.csv'}: row 1")


# ============================================================================ the same micrograph twice (defect 5)

def test_the_same_micrograph_on_two_rows_is_refused_naming_both(screen):
    """One micrograph listed 4 times for one protein took its cells from 3 to 12 and raised its call's
    probability, silently.  A repeat (however its path is written, under any protein) names both rows; with
    --skip-bad the repeats are listed and left out, each micrograph counted once."""
    from deepyeast.analysis.classify_screen import read_screen_rows
    from deepyeast.constants import CLASS_NAMES
    from deepyeast.data.screen_tables import Rejects

    table = screen / "images.csv"
    table.write_text("image,plate,protein\nf0.tif,1,YAL001C\nf1.tif,1,YAL001C\n./f0.tif,1,YAL001C\n"
                     f"{screen / 'f0.tif'},1,YAL002W\n")
    with pytest.raises(InputError, match=r"images.csv:4: \./f0.tif is the micrograph of \S*images.csv:2 again; "
                                         r"each micrograph may appear once \(its cells would count twice\)$"):
        read_screen_rows(str(table), CLASS_NAMES, Rejects())
    skipped = Rejects(skip_bad=True)
    rows = read_screen_rows(str(table), CLASS_NAMES, skipped)
    assert [r["image"] for r in rows] == ["f0.tif", "f1.tif"]
    assert [where.rsplit(":", 1)[1] for where, _ in skipped.items] == ["4", "5"]
