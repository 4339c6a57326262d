"""Split lists -> LMDB + mean + manifest, read back; bad input handling."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from deepyeast.data import make_lmdb as dataset
from deepyeast.data.crop_png import read_crop
from deepyeast.data.lists import read_split_list
from deepyeast.constants import CLASS_NAMES
from deepyeast.caffe.blobs import read_mean_binaryproto
from deepyeast.caffe.lmdb import iter_datum_lmdb, read_datum_lmdb
from deepyeast.utils.io import InputError
from deepyeast.utils.run_context import RunContext

from _data_helpers import REPO_ROOT, tiny_screen

QUIET = RunContext(progress=False)


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    return tiny_screen(tmp_path_factory, jobs=1)  # no fork from this test process (see tiny_screen)


@pytest.fixture(scope="module")
def bundle(screen, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    summary = dataset.build_lmdbs(str(screen / "main"), str(out), context=QUIET)
    return out, summary


def test_lmdb_read_back_matches_lists_and_crops(screen, bundle):
    out, summary = bundle
    root = screen / "main"
    for split in ("train", "val", "test"):
        entries = dict(read_split_list(str(root / f"HOwt_{split}.txt"))[0])
        images, labels, keys = read_datum_lmdb(str(out / f"{split}_lmdb"))
        assert images.shape == (len(entries), 2, 64, 64) and images.dtype == np.uint8
        rels = [k.split("_", 1)[1] for k in keys]
        assert [int(k.split("_", 1)[0]) for k in keys] == list(range(len(keys)))
        assert sorted(rels) == sorted(entries)
        assert rels != sorted(rels)  # shuffled
        for rel, img, lab in list(zip(rels, images, labels))[:40]:
            assert lab == entries[rel]
            assert np.array_equal(img, read_crop(str(root / rel)))
        m = json.loads((out / f"{split}_manifest.json").read_text())
        assert m["n_records"] == len(entries) and m["n_rejected"] == 0
        assert sum(m["cells_per_class"].values()) == len(entries) and set(m["cells_per_class"]) == set(CLASS_NAMES)
        assert sum(m["cells_per_protein"].values()) == len(entries)
        assert len(m["content_sha256"]) == 64 and m["list_file"] == f"HOwt_{split}.txt"
    train, _, _ = read_datum_lmdb(str(out / "train_lmdb"))
    np.testing.assert_allclose(read_mean_binaryproto(str(out / "mean.binaryproto")), train.mean(0), atol=1e-4)
    assert summary["n_records"] == sum(summary["splits"][s]["n_records"] for s in ("train", "val", "test"))


def test_same_seed_same_database(screen, bundle, tmp_path):
    out, _ = bundle
    dataset.build_lmdbs(str(screen / "main"), str(tmp_path / "b"), splits=("train",), context=QUIET)
    a = json.loads((out / "train_manifest.json").read_text())
    b = json.loads((tmp_path / "b" / "train_manifest.json").read_text())
    assert a["content_sha256"] == b["content_sha256"]
    assert [k for k, _, _ in iter_datum_lmdb(str(out / "train_lmdb"))] == \
        [k for k, _, _ in iter_datum_lmdb(str(tmp_path / "b" / "train_lmdb"))]


def _small_archive(screen, tmp_path):
    """A copy of part of the tiny screen, small enough to corrupt freely."""
    src = screen / "main"
    dst = tmp_path / "arch"
    lists = {}
    for s in ("train", "val", "test"):
        entries = read_split_list(str(src / f"HOwt_{s}.txt"))[0][:12]
        lists[s] = entries
        for rel, _ in entries:
            os.makedirs(dst / os.path.dirname(rel), exist_ok=True)
            shutil.copy(src / rel, dst / rel)
    for s, entries in lists.items():
        (dst / f"HOwt_{s}.txt").write_text("".join(f"{r} {lab}\n" for r, lab in entries))
    return dst, lists


def test_bad_crops_stop_or_are_skipped_and_counted(screen, tmp_path):
    arch, lists = _small_archive(screen, tmp_path)
    bad = {
        lists["train"][0][0]: (b"\x89PNG\r\n\x1a\n garbage", "corrupt or truncated"),
        lists["train"][1][0]: (None, "listed file is missing"),
    }
    for rel, (data, _) in bad.items():
        if data is None:
            os.unlink(arch / rel)
        else:
            (arch / rel).write_bytes(data)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="corrupt or truncated|listed file is missing"):
        dataset.build_lmdbs(str(arch), str(out), context=QUIET)
    assert not (out / "train_lmdb").exists()  # nothing half-written
    r = subprocess.run([sys.executable, "data_prep/make_lmdb.py", str(arch), str(out), "--skip-bad"],
                       cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["splits"]["train"] == {"n_records": 10, "n_rejected": 2}
    rejects = (out / "train_rejects.txt").read_text()
    for rel, (_, why) in bad.items():
        assert rel in rejects and why in rejects
    assert len(read_datum_lmdb(str(out / "train_lmdb"))[1]) == 10


def test_bad_lists_protein_in_two_splits_duplicate_label(screen, tmp_path):
    arch, lists = _small_archive(screen, tmp_path)
    rel, lab = lists["train"][0]
    with open(arch / "HOwt_val.txt", "a") as f:
        f.write(f"{rel} {lab}\n")  # same cell (and protein) in val
    with pytest.raises(InputError, match="protein.*in both train and val"):
        dataset.build_lmdbs(str(arch), str(arch / "out"), context=QUIET)
    s = dataset.build_lmdbs(str(arch), str(arch / "out"), skip_bad=True, context=QUIET)
    assert s["splits"]["val"]["n_rejected"] >= 1
    assert "already in split train" in (arch / "out" / "val_rejects.txt").read_text()
    with open(arch / "HOwt_test.txt", "a") as f:
        f.write(f"{lists['test'][0][0]} {lists['test'][0][1]}\n")
        f.write(f"{lists['test'][1][0]} 12\n")
    r = subprocess.run([sys.executable, "data_prep/make_lmdb.py", str(arch), str(tmp_path / "o2")], cwd=REPO_ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "HOwt_test.txt" in r.stderr


def test_missing_list_is_named(tmp_path):
    with pytest.raises(InputError, match="HOwt_train.txt: split list is missing"):
        dataset.build_lmdbs(str(tmp_path), str(tmp_path / "o"), context=QUIET)


def test_transfer_bundle(screen, tmp_path):
    s = dataset.build_lmdbs(str(screen / "transfer"), str(tmp_path / "t"), prefix="HOwt_transfer_",
                                  context=QUIET)
    assert s["n_records"] > 50
    m = json.loads((tmp_path / "t" / "train_manifest.json").read_text())
    assert set(m["cells_per_class"]) == {"actin", "bud neck", "lipid particle", "microtubule"}
