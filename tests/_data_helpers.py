"""Shared fixtures for the data-preparation tests (not a test module)."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_SPLITS = os.path.join(REPO_ROOT, "..", "shared", "deepyeast-splits")


def tiny_screen(tmp_path_factory, seed=0, jobs=1):
    """Path of a tiny synthetic screen, generated once per test session, seed and worker count (so a test
    comparing worker counts compares a screen really made with each).

    ``jobs=1`` (the default) in the test process: tests run in random order, so any of them may follow one
    that ran OpenCV's or scipy's threads, and a worker pool forked then can hang on locks those threads
    held (a clean-clone CI run hung so on 2026-12-07; the same screen whatever the workers; the pipeline
    tests run the generator's worker pool from a fresh process).
    """
    from deepyeast.data.make_synthetic import make_screen
    base = tmp_path_factory.getbasetemp() / f"tiny_screen_{seed}_w{jobs}"
    if not (base / "screen.json").exists():
        make_screen(str(base), "tiny", seed=seed, jobs=jobs, save_fields=3, progress=False)
    return base


def csv_rows(path):
    """The rows of a CSV file with a header, as dicts (column -> text)."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tiny_fields(tmp_path_factory):
    """The tiny screen's saved fields (seed 0, one worker) as uint8 2 x H x W arrays (marker, protein), in
    the order of its images.csv."""
    import tifffile

    src = tiny_screen(tmp_path_factory, jobs=1) / "main" / "fields"
    return [tifffile.imread(src / r["image"]) for r in csv_rows(src / "images.csv")]
