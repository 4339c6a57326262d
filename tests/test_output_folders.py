"""``--out`` never deletes what a step did not write (issue 19, defect 1).

Every step that writes a folder replaces it as a whole (``deepyeast.utils.io.atomic_folder``).
It may replace only a folder a DeepYeast step wrote (the marker file it leaves there); any other
non-empty folder is refused with one line (``--force`` replaces it anyway), and an output that is,
holds or lies inside one of the step's inputs is refused even with ``--force``.  Checked with a
user's folder as a user has it: micrographs, their masks, an ``images.csv``, an unrelated
``thesis.tex``.
"""

import hashlib
import os

import numpy as np
import pytest

from _bundles import make_bundle
from _cell_crops import write_archive
from _steps import run_step
from deepyeast.utils.io import OUTPUT_MARKER, InputError, atomic_folder, output_policy


def _snapshot(folder):
    """{relative path: md5} of every file under ``folder``."""
    out = {}
    for d, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = hashlib.md5(f.read()).hexdigest()
    return out


def _user_screen(folder):
    """A user's screen folder: two 2-channel TIFF micrographs, a mask, images.csv, thesis.tex."""
    import cv2
    import tifffile

    rng = np.random.default_rng(0)
    os.makedirs(folder / "masks")
    lines = ["image,plate,protein,label,mask"]
    for i in range(2):
        img = rng.integers(0, 40, (2, 128, 128), dtype=np.uint8)
        mask = np.zeros((128, 128), np.uint16)
        for k, (y, x) in enumerate([(40, 40), (80, 90)], 1):
            yy, xx = np.ogrid[:128, :128]
            cell = (yy - y) ** 2 + (xx - x) ** 2 < 12 ** 2
            img[:, cell] = 150
            mask[cell] = k
        tifffile.imwrite(folder / f"field{i}.tif", img)
        cv2.imwrite(str(folder / "masks" / f"field{i}.png"), mask)
        lines.append(f"field{i}.tif,1,YAL00{i}W,{i},masks/field{i}.png")
    (folder / "images.csv").write_text("\n".join(lines) + "\n")
    (folder / "thesis.tex").write_text("\\documentclass{article} chapter 3, not backed up\n")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A model bundle, an archive with split lists, and the user's screen folder."""
    base = tmp_path_factory.mktemp("outputs")
    bundle, _, _ = make_bundle(str(base / "bundle"), str(base))
    archive = base / "archive"
    write_archive(str(archive), {"train": 5, "val": 5, "test": 5})  # 5 cells per protein
    return dict(bundle=bundle, archive=archive, screen=_user_screen(base / "screen"))


def _steps(setup, out):
    """(name, argv) of each step that writes a folder, writing it to ``out``."""
    b, images = setup["bundle"], setup["screen"] / "images.csv"
    return [
        ("segment_cells", ["data_prep/segment_cells.py", images, "--out", out]),
        ("crop_cells", ["data_prep/crop_cells.py", images, "--out", out]),
        ("classify_screen", ["analysis/classify_screen.py", "--model", b, "--images", images, "--out", out]),
        ("make_bundle", ["analysis/make_bundle.py", "--model", f"{b}/deploy.prototxt", "--weights",
                         f"{b}/weights.caffemodel", "--mean", f"{b}/mean.binaryproto", "--classes",
                         f"{b}/classes.txt", "--out", out]),
        ("make_lmdb", ["data_prep/make_lmdb.py", setup["archive"], "--out", out, "--classes", "transfer"]),
    ]


STEPS = ["segment_cells", "crop_cells", "classify_screen", "make_bundle", "make_lmdb"]


def _argv(setup, step, out):
    return dict(_steps(setup, out))[step]


@pytest.mark.parametrize("step", STEPS)
def test_out_on_the_users_screen_folder_is_refused_and_nothing_is_lost(setup, step, capsys):
    """--out = the folder holding the micrographs, masks, images.csv and thesis.tex."""
    screen = setup["screen"]
    before = _snapshot(screen)
    reads_the_table = step in ("segment_cells", "crop_cells", "classify_screen")
    for force in ([], ["--force"]) if reads_the_table else ([],):  # --force may replace what is no input
        code = run_step(*_argv(setup, step, screen), *force)
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1 and err.startswith(f"{step}.py: error: {screen}: "), err
        if reads_the_table:
            assert f"would replace the step's own input {screen / 'images.csv'}" in err, err
        else:
            assert "not written by a DeepYeast step (it holds field0.tif and 4 more)" in err, err
        assert _snapshot(screen) == before
    assert OUTPUT_MARKER not in os.listdir(screen)


@pytest.mark.parametrize("step", STEPS)
def test_out_on_a_folder_with_an_unrelated_file_is_refused(setup, step, tmp_path, capsys):
    thesis = tmp_path / "work"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("chapter 3\n")
    code = run_step(*_argv(setup, step, thesis))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.endswith("give a new or empty folder, or --force to delete what it holds"), err
    assert f"{thesis}: not written by a DeepYeast step (it holds thesis.tex)" in err, err
    assert sorted(os.listdir(tmp_path)) == ["work"] and os.listdir(thesis) == ["thesis.tex"]


@pytest.mark.parametrize("step", STEPS)
def test_out_dot_in_a_working_folder_is_refused(setup, step, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thesis.tex").write_text("chapter 3\n")
    code = run_step(*_argv(setup, step, "."), "--force")
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "is the current folder or holds it" in err and len(err.splitlines()) == 1, err
    assert os.listdir(tmp_path) == ["thesis.tex"]


def test_a_step_replaces_its_own_output_and_force_replaces_any(setup, tmp_path, capsys):
    out = tmp_path / "lmdb"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    argv = _argv(setup, "make_lmdb", out)
    assert run_step(*argv, "--force") == 0, capsys.readouterr().err
    assert "notes.txt" not in os.listdir(out) and OUTPUT_MARKER in os.listdir(out)
    assert "make_lmdb.py" in (out / OUTPUT_MARKER).read_text()
    first = (out / "train_manifest.json").read_text()
    assert run_step(*argv) == 0, capsys.readouterr().err  # its own folder: replaced without --force
    assert (out / "train_manifest.json").read_text() == first
    # an empty folder is taken as it is
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_step(*_argv(setup, "make_lmdb", empty)) == 0, capsys.readouterr().err


def test_output_inside_the_input_folder_is_refused_even_with_force(setup, capsys):
    archive = setup["archive"]
    before = _snapshot(archive)
    code = run_step(*_argv(setup, "make_lmdb", archive / "lmdb"), "--force")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "inside the step's input folder" in err and str(archive) in err, err
    assert _snapshot(archive) == before


def test_library_folder_outputs_follow_the_same_rule(tmp_path):
    """Called from Python (no launcher): the same refusal, and ``output_policy(force=True)`` replaces."""
    out = tmp_path / "x"
    out.mkdir()
    (out / "data.csv").write_text("a\n")
    with pytest.raises(InputError, match="not written by a DeepYeast step"):
        with atomic_folder(out) as tmp:
            open(os.path.join(tmp, "y"), "w").close()
    assert os.listdir(out) == ["data.csv"] and sorted(os.listdir(tmp_path)) == ["x"]
    with output_policy(force=True):
        with atomic_folder(out) as tmp:
            open(os.path.join(tmp, "y"), "w").close()
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "y"]
    # a folder that changes during the step (a user's file appears, the marker goes) is still not replaced
    with pytest.raises(InputError, match="not written by a DeepYeast step"):
        with atomic_folder(out) as tmp:
            (out / OUTPUT_MARKER).unlink()
            (out / "late.txt").write_text("b\n")
    assert sorted(os.listdir(out)) == ["late.txt", "y"] and sorted(os.listdir(tmp_path)) == ["x"]
