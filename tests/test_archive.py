"""The real split lists, protein identity, crop reading and the fetch step."""

import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading

import cv2
import numpy as np
import pytest

from deepyeast.data.crop_png import decode_crop, encode_crop, read_crop
from deepyeast.data.download import (FetchError, LIST_MD5, LIST_URL_DIR, TARBALLS, download, fetch_archive,
                                     md5_of, safe_extract)
from deepyeast.data.lists import check_splits, protein_of, read_class_doc, read_split_list
from deepyeast.constants import CLASS_NAMES, TRANSFER_CLASS_NAMES
from deepyeast.utils.io import InputError

from _data_helpers import REPO_ROOT, SHARED_SPLITS
from _requirements import reason

# CI has ../shared beside the clone: there these tests run (a skip for the missing component fails CI)
needs_real_lists = pytest.mark.skipif(not os.path.exists(os.path.join(SHARED_SPLITS, "HOwt_train.txt")),
                                      reason=reason("splits"))


def _real(name):
    return os.path.join(SHARED_SPLITS, name)


def test_protein_of():
    assert protein_of("plate01/007013000-2-626-38.png") == "plate01/007013000"
    assert protein_of("plate10/015005000-6-15188-94.png") == "plate10/015005000"
    with pytest.raises(InputError, match="plate folder"):
        protein_of("007013000-2-626-38.png")


# ---------------------------------------------------------------- real lists

@needs_real_lists
def test_real_lists_match_published_md5():
    for name, md5 in LIST_MD5.items():
        assert md5_of(_real(name)) == md5, name


@needs_real_lists
def test_real_main_splits_integrity_and_counts():
    paths = {s: _real(f"HOwt_{s}.txt") for s in ("train", "val", "test")}
    report, ok = check_splits(paths)
    assert ok, report["errors"]
    sp = report["splits"]
    assert [sp[s]["n_cells"] for s in ("train", "val", "test")] == [65000, 12500, 12500]
    # the paper's test set: 282 proteins, 222 of them with >= 10 cells
    assert sp["test"]["n_proteins"] == 282 and sp["test"]["n_proteins_min10"] == 222
    assert sum(sp[s]["n_proteins"] for s in sp) == 1783  # proteins of the paper
    for s in sp:
        assert sum(sp[s]["cells_per_class"].values()) == sp[s]["n_cells"]
        assert set(sp[s]["cells_per_class"]) == set(CLASS_NAMES)
        assert min(sp[s]["cells_per_class"].values()) > 0
    assert all(v == [] for v in report["shared_proteins"].values())
    assert read_class_doc(_real("HOwt_doc.txt")) == [n.lower() for n in CLASS_NAMES]


@needs_real_lists
def test_real_transfer_splits():
    paths = {s: _real(f"HOwt_transfer_{s}.txt") for s in ("train", "val", "test")}
    report, ok = check_splits(paths)
    assert ok, report["errors"]
    assert report["splits"]["train"]["cells_per_class"] == {n: 1000 for n in TRANSFER_CLASS_NAMES}
    assert read_class_doc(_real("HOwt_transfer_doc.txt")) == list(TRANSFER_CLASS_NAMES)


@needs_real_lists
def test_check_splits_cli_on_real_lists():
    out = subprocess.run([sys.executable, "data_prep/check_splits.py"] + [_real(f"HOwt_{s}.txt") for s in
                                                                          ("train", "val", "test")],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["splits"]["val"]["n_cells"] == 12500
    assert report["splits"]["val"]["cells_per_class"]["nucleus"] > 0


def test_check_splits_cli_fails_on_leak_and_bad_label(tmp_path):
    (tmp_path / "HOwt_train.txt").write_text("plate01/001001000-0-1-0.png 3\nplate01/001002000-0-1-0.png 4\n")
    (tmp_path / "HOwt_val.txt").write_text("plate01/001001000-1-7-0.png 3\n")
    (tmp_path / "HOwt_test.txt").write_text("plate02/001001000-0-1-0.png 12\n")
    out = subprocess.run([sys.executable, "data_prep/check_splits.py"] +
                         [str(tmp_path / f"HOwt_{s}.txt") for s in ("train", "val", "test")],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["shared_proteins"]["train&val"] == ["plate01/001001000"]
    assert any("outside the class table" in e and "HOwt_test.txt:1" in e for e in report["errors"])


def test_split_list_bad_lines(tmp_path):
    p = tmp_path / "HOwt_train.txt"
    p.write_text("plate01/a-0-1-0.png 1\nplate01/a-0-1-0.png 1\n")
    with pytest.raises(InputError, match=r"HOwt_train.txt:2: duplicate entry \(first on line 1\)"):
        read_split_list(str(p))
    p.write_text("plate01/a-0-1-0.png 1\nplate01/b-0-1-0.png 99\nbroken line here\n")
    with pytest.raises(InputError, match=r":2: label 99 outside the class table \(0..11\)"):
        read_split_list(str(p))
    entries, rejects = read_split_list(str(p), skip_bad=True)
    assert entries == [("plate01/a-0-1-0.png", 1)]
    assert len(rejects) == 2 and "expected 'relpath label'" in rejects[1][1]


# ---------------------------------------------------------------- crops

def _png(arr):
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def test_encode_decode_roundtrip_and_pil_reads_it():
    from PIL import Image
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (2, 64, 64), dtype=np.uint8)
    data = encode_crop(crop)
    assert np.array_equal(decode_crop(data), crop)
    rgb = np.asarray(Image.open(io.BytesIO(data)))
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[..., 0], crop[0]) and not rgb[..., 2].any()


def test_bad_crops_are_named_with_reason(tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint8)
    good = _png(rgb)
    cases = {
        "corrupt.png": (b"not a png at all" * 10, "corrupt or truncated"),
        "truncated.png": (good[: len(good) // 2], "corrupt or truncated"),
        "grey.png": (_png(np.zeros((64, 64), np.uint8)), "single-channel"),
        "deep.png": (_png(np.zeros((64, 64, 3), np.uint16)), "16-bit"),
        "big.png": (_png(np.zeros((65, 64, 3), np.uint8)), "64x65 pixels, expected 64x64"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError) as e:
            read_crop(str(tmp_path / name))
        assert name in str(e.value) and reason in str(e.value)
    with pytest.raises(InputError, match="missing.png: listed file is missing"):
        read_crop(str(tmp_path / "missing.png"))


# ---------------------------------------------------------------- fetching

class _RangeHandler(http.server.BaseHTTPRequestHandler):
    files = {}
    log = []

    def do_GET(self):  # noqa: N802
        data = self.files.get(self.path)
        self.log.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _RangeHandler.files, _RangeHandler.log = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_resumes_with_range_and_checks_md5(server, tmp_path):
    _, url = server
    data = os.urandom(300_000)
    _RangeHandler.files["/f.bin"] = data
    md5 = hashlib.md5(data).hexdigest()
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(data[:100_000])  # an interrupted earlier run
    download(url + "/f.bin", str(dest), md5)
    assert dest.read_bytes() == data and not (tmp_path / "f.bin.part").exists()
    assert _RangeHandler.log[-1] == ("/f.bin", "bytes=100000-")
    # present and verified: not downloaded again
    n = len(_RangeHandler.log)
    download(url + "/f.bin", str(dest), md5)
    assert len(_RangeHandler.log) == n
    # wrong md5: refused, nothing left under the final name
    with pytest.raises(FetchError, match="does not match the published"):
        download(url + "/f.bin", str(tmp_path / "g.bin"), "0" * 32)
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()


def test_download_offline_message(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    with pytest.raises(FetchError, match="offline.*run the command again"):
        download(f"http://127.0.0.1:{port}/main.tar.gz", str(tmp_path / "main.tar.gz"), timeout=5)
    assert not (tmp_path / "main.tar.gz").exists()


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("bad", [("../evil.txt", b"x", "file"), ("/tmp/abs_evil.txt", b"x", "file"),
                                 ("plate01/link", "../../outside", "sym")])
def test_safe_extract_refuses_escaping_members(tmp_path, bad):
    tgz = tmp_path / "a.tar.gz"
    tgz.write_bytes(_tar([("plate01/ok-0-0-0.png", b"data", "file"), bad]))
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match="outside"):
        safe_extract(str(tgz), str(dest))
    assert not (dest / "plate01").exists() and not (tmp_path / "evil.txt").exists()


def test_safe_extract_and_fetch_lists(server, tmp_path):
    _, url = server
    tgz = _tar([("plate01/ok-0-0-0.png", b"data", "file"), ("HOwt_doc.txt", b"label;label_idx\n", "file")])
    _RangeHandler.files["/data/main.tar.gz"] = tgz
    md5 = hashlib.md5(tgz).hexdigest()
    orig = dict(TARBALLS)
    TARBALLS["main"] = ("data/main.tar.gz", md5)
    try:
        out = fetch_archive(str(tmp_path / "dl"), parts=("main",), base_url=url)
    finally:
        TARBALLS.clear()
        TARBALLS.update(orig)
    assert (tmp_path / "dl" / "main" / "plate01" / "ok-0-0-0.png").read_bytes() == b"data"
    assert out["main"].endswith("main")
    with pytest.raises(ValueError, match="unknown part"):
        fetch_archive(str(tmp_path / "dl"), parts=("everything",), base_url=url)


@needs_real_lists
def test_fetch_lists_from_a_mirror(server, tmp_path):
    _, url = server
    for name in LIST_MD5:
        with open(_real(name), "rb") as f:
            _RangeHandler.files[f"/{LIST_URL_DIR}/{name}"] = f.read()
    out = subprocess.run([sys.executable, "data_prep/fetch_archive.py", str(tmp_path / "lists"), "--only", "lists",
                          "--base-url", url], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert md5_of(str(tmp_path / "lists" / "HOwt_test.txt")) == LIST_MD5["HOwt_test.txt"]
