"""Features written batch by batch (deepyeast.caffe.feature_stream): the streamed .npy equals the
one-shot np.save, the streamed per-channel top activations equal the search over the whole maps,
predictions and features written in chunks equal those of one batch, and the interpretation
gives the same figures from pooled features + top activations as from the whole maps."""

import json
import os

import numpy as np
import pytest

from deepyeast import constants
from deepyeast.analysis.features import channel_mean_max, load_blob, read_label_lists, read_top
from deepyeast.analysis.interpret import InterpretInputs, InterpretSettings, run_interpretation
from deepyeast.analysis.interpret.patches import stored_top_units, top_activating_units
from deepyeast.caffe.feature_stream import NpyWriter, TopActivations
from deepyeast.utils.io import InputError
from deepyeast.utils.run_context import RunContext


def test_npy_writer_writes_the_bytes_np_save_writes(tmp_path):
    rng = np.random.default_rng(0)
    whole = rng.normal(size=(23, 7)).astype(np.float32)
    np.save(tmp_path / "once.npy", whole)
    with NpyWriter(str(tmp_path / "chunks.npy"), 23, 7) as w:
        for start in range(0, 23, 5):
            w.write(whole[start:start + 5].astype(np.float64))  # converted to the file's dtype
    assert (tmp_path / "chunks.npy").read_bytes() == (tmp_path / "once.npy").read_bytes()
    # fewer rows than announced: an error, and no partial file left behind
    with pytest.raises(ValueError, match="20 rows written of the 23"):
        with NpyWriter(str(tmp_path / "short.npy"), 23, 7) as w:
            w.write(whole[:20])
    with pytest.raises(ValueError, match="more than the 23 rows"):
        with NpyWriter(str(tmp_path / "long.npy"), 23, 7) as w:
            w.write(whole)
            w.write(whole[:1])
    assert not (tmp_path / "long.npy").exists()
    with pytest.raises(ValueError, match=r"rows of shape \(6,\)"):
        NpyWriter(str(tmp_path / "wide.npy"), 23, 7).write(whole[:, :6])


@pytest.mark.parametrize("chunk", [1, 3, 7, 40])
def test_streamed_top_activations_equal_the_search_over_whole_maps(chunk):
    """Integer-valued maps make ties between cells and within a map: the stored cells, positions
    and values are exactly top_activating_units' (ties to the lower cell, the first maximal unit)."""
    rng = np.random.default_rng(chunk)
    maps = rng.integers(0, 6, size=(40, 5, 3, 4)).astype(np.float32)
    maps[17, 2] = -1  # a channel silent in one cell
    top = TopActivations(k=9)
    for start in range(0, 40, chunk):
        top.update(maps[start:start + chunk])
    arrays = top.arrays()
    assert arrays["value"].shape == (5, 9) and arrays["cell"].dtype == np.int64
    for channel in range(5):
        assert stored_top_units(arrays, channel, k=9) == top_activating_units(maps, channel, k=9)
        assert stored_top_units(arrays, channel, k=4) == top_activating_units(maps, channel, k=4)
    with pytest.raises(InputError, match="10 top cells asked for, 9 stored"):
        stored_top_units(arrays, 0, k=10, n_cells=40)


def test_top_activations_of_fewer_cells_than_k_keep_every_cell():
    maps = np.arange(3 * 2 * 2 * 2, dtype=np.float32).reshape(3, 2, 2, 2)
    top = TopActivations(k=16)
    top.update(maps)
    arrays = top.arrays()
    assert arrays["cell"].shape == (2, 3)
    assert stored_top_units(arrays, 1, k=8, n_cells=3) == top_activating_units(maps, 1, k=8)


def _folder(root, paths, blobs):
    root.mkdir()
    (root / "paths.txt").write_text("".join(p + "\n" for p in paths))
    for name, array in blobs.items():
        np.save(root / name, array)
    return root


def test_interpretation_from_pooled_features_equals_the_one_from_whole_maps(tmp_path):
    """The same activations saved whole (conv8.npy) and as predict saves them by default
    (conv8.pool.npy + conv8.top.npz): identical neuron tables, top neurons and patch cells."""
    from PIL import Image
    rng = np.random.default_rng(3)
    n, classes = 24, constants.TRANSFER_CLASS_NAMES
    labels = np.arange(n) % len(classes)
    paths = [f"plate01/{i}-1-1-1.png" for i in range(n)]
    os.makedirs(tmp_path / "archive" / "plate01")
    for i, p in enumerate(paths):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "archive" / p)
    (tmp_path / "archive" / "HOwt_test.txt").write_text("".join(f"{p} {l}\n" for p, l in zip(paths, labels)))
    conv8 = rng.uniform(0, 1, size=(n, 256, 16, 16)).astype(np.float32)
    conv8[:, 3] += labels[:, None, None]  # channel 3 tells the class
    fc1 = rng.normal(size=(n, 512)).astype(np.float32)
    whole = _folder(tmp_path / "whole", paths, {"conv8.npy": conv8.reshape(n, -1), "fc1.npy": fc1})
    means, maxima = channel_mean_max(conv8)
    top = TopActivations()
    for start in range(0, n, 5):
        top.update(conv8[start:start + 5])
    pooled = _folder(tmp_path / "pooled", paths, {"conv8.pool.npy": np.concatenate([means, maxima], 1),
                                                  "fc1.npy": fc1})
    top.save(str(pooled / "conv8.top.npz"))
    assert read_top(str(pooled), "conv8")["cell"].shape == (256, 16)
    lab = read_label_lists(tmp_path / "archive", n_classes=4)
    got = {}
    for name, folder in (("whole", whole), ("pooled", pooled)):
        out = tmp_path / f"out_{name}"
        run_interpretation(InterpretInputs(str(folder), lab, classes, archive_root=tmp_path / "archive"), str(out),
                           InterpretSettings(n_tsne=n, n_patches=5, patch_layers=("conv8", "fc1")),
                           RunContext(log=lambda *_: None))
        got[name] = (json.loads((out / "interpret.json").read_text()),
                     (out / "neurons_conv8.csv").read_text(), (out / "tsne.csv").read_text())
    (js_w, csv_w, tsne_w), (js_p, csv_p, tsne_p) = got["whole"], got["pooled"]
    assert csv_w == csv_p and tsne_w == tsne_p
    assert js_w["layers"] == js_p["layers"] and js_w["layers"]["conv8"]["top_neurons"][0] == 3
    assert js_w["patches"] == js_p["patches"] and len(js_w["patches"][0]["cells"]) == 5
    assert (tmp_path / "out_pooled" / "patches.png").stat().st_size > 0
    # t-SNE of the whole maps needs them: a clear error from the pooled folder
    with pytest.raises(InputError, match="conv8.npy: no such feature file"):
        run_interpretation(InterpretInputs(str(pooled), lab, classes), str(tmp_path / "o3"),
                           InterpretSettings(tsne_reduce="full", n_tsne=n), RunContext(log=lambda *_: None))
    np.testing.assert_array_equal(load_blob(str(whole), "conv8"), conv8)


def test_bad_top_file_is_named(tmp_path):
    folder = _folder(tmp_path / "f", ["a.png", "b.png"], {})
    np.savez(folder / "conv8.top.npz", value=np.zeros((256, 2), np.float32), cell=np.full((256, 2), 5),
             row=np.zeros((256, 2), np.int32), col=np.zeros((256, 2), np.int32))
    with pytest.raises(InputError, match=r"conv8.top.npz: a cell index outside the 2 rows of paths.txt"):
        read_top(str(folder), "conv8")
    np.savez(folder / "conv8.top.npz", value=np.zeros((3, 2), np.float32))
    with pytest.raises(InputError, match="conv8.top.npz: not a top-activations file"):
        read_top(str(folder), "conv8")
    with pytest.raises(InputError, match="conv1.top.npz: no such file"):
        read_top(str(folder), "conv1")
