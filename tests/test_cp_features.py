"""CellProfiler-style features: mask, values against independent sums, batch independence, CSV."""

import os

import numpy as np
import pytest

from deepyeast.analysis import cp_features as cf
from deepyeast.utils.io import InputError

from _cell_crops import cell_crop, write_archive

ZERNIKE = "Zernike"  # see cp_features docstring: a boundary pixel may flip between batches


def _disk(cy, cx, r, size=64):
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def test_cell_mask_keeps_the_central_object_not_a_brighter_neighbour():
    marker = np.full((64, 64), 10, np.uint8)
    centre = _disk(32, 32, 12)
    marker[centre] = 120
    marker[_disk(5, 5, 6)] = 250  # a brighter intruding neighbour in the corner
    mask, fallback = cf.cell_mask(marker)
    assert not fallback
    assert mask[32, 32] and not mask[5, 5]
    # the smoothed edge may shift the outline by a pixel, no more
    assert abs(int(mask.sum()) - int(centre.sum())) < 0.15 * centre.sum()


def test_cell_mask_uses_nearest_component_when_centre_is_background_and_falls_back_on_empty():
    marker = np.full((64, 64), 10, np.uint8)
    marker[_disk(20, 44, 9)] = 150
    marker[_disk(58, 4, 4)] = 150
    mask, fallback = cf.cell_mask(marker)
    assert not fallback and mask[20, 44] and not mask[58, 4]
    empty, fallback = cf.cell_mask(np.full((64, 64), 7, np.uint8))
    assert fallback and empty[32, 32] and empty.sum() == cf.cell_mask(np.zeros((64, 64)))[0].sum()


def test_feature_names_count_and_no_position_features():
    names = cf.feature_names()
    assert len(names) == len(set(names)) == 430  # documented in the module docstring
    assert not [n for n in names if "Center_" in n or "Location_" in n or "BoundingBoxM" in n]
    for family in ("AreaShape_Zernike_", "Protein_Texture_Contrast_3_", "Protein_Texture_Contrast_5_",
                   "Marker_Texture_Gabor_", "Protein_Granularity_", "Protein_RadialDistribution_FracAtD_",
                   "Protein_RadialDistribution_ZernikeMagnitude_", "Protein_Intensity_", "Correlation_Pearson"):
        assert any(n.startswith(family) for n in names), family


def test_values_match_independent_calculation():
    rng = np.random.default_rng(3)
    imgs = np.stack([cell_crop(rng, k) for k in range(4)])
    masks = np.stack([cf.cell_mask(im[0])[0] for im in imgs])
    names, values = cf.measure_crops(imgs, masks)
    col = {n: i for i, n in enumerate(names)}
    for k in range(4):
        m = masks[k]
        prot = imgs[k, 1][m] / 255.0
        mark = imgs[k, 0][m] / 255.0
        assert values[k, col["AreaShape_Area"]] == m.sum()
        assert values[k, col["Protein_Intensity_MeanIntensity"]] == pytest.approx(prot.mean(), rel=1e-9)
        assert values[k, col["Protein_Intensity_IntegratedIntensity"]] == pytest.approx(prot.sum(), rel=1e-9)
        assert values[k, col["Marker_Intensity_MaxIntensity"]] == pytest.approx(mark.max(), rel=1e-9)
        assert values[k, col["Correlation_Pearson"]] == pytest.approx(np.corrcoef(prot, mark)[0, 1], abs=1e-9)
        fracs = [values[k, col[f"Protein_RadialDistribution_FracAtD_{i}of4"]] for i in range(1, 5)]
        assert sum(fracs) == pytest.approx(1.0, abs=1e-9)


def test_features_do_not_depend_on_the_batch():
    rng = np.random.default_rng(5)
    imgs = np.stack([cell_crop(rng, k % 4) for k in range(7)])
    names, batch = cf.measure_crops(imgs)
    zern = np.array([ZERNIKE in n for n in names])
    for k in (0, 6):
        _, alone = cf.measure_crops(imgs[k:k + 1])
        np.testing.assert_allclose(alone[0, ~zern], batch[k, ~zern], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(alone[0, zern], batch[k, zern], atol=0.02)


def test_classes_differ_in_their_features():
    rng = np.random.default_rng(9)
    imgs = np.stack([cell_crop(rng, k % 4) for k in range(16)])
    names, v = cf.measure_crops(imgs)
    ring = v[1::4, names.index("Protein_RadialDistribution_FracAtD_4of4")]
    blob = v[3::4, names.index("Protein_RadialDistribution_FracAtD_4of4")]
    assert ring.min() > blob.max()  # ring class has its protein at the rim, the blob class at the centre


def test_extract_write_read_roundtrip_and_local_cluster_equals_serial(tmp_path):
    """Chunks of cells as tasks on a Dask LocalCluster of 2 processes: the values of one process."""
    lists = write_archive(str(tmp_path / "arch"), {"test": 3}, n_classes=4, seed=1)
    paths = [rel for rel, _ in lists["test"]]
    names, v1, fb = cf.extract_features(paths, root=str(tmp_path / "arch"), scheduler="none", batch=5)
    _, v2, _ = cf.extract_features(paths, root=str(tmp_path / "arch"), scheduler="local", jobs=2, batch=5)
    assert fb == 0 and v1.shape == (12, len(names))
    np.testing.assert_array_equal(v1, v2)
    out = tmp_path / "f.csv"
    cf.write_feature_csv(out, paths, names, v1)
    p, n, v = cf.read_feature_csv(out)
    assert p == paths and n == names
    np.testing.assert_array_equal(v, v1)
    # the streaming writer (flat memory) writes the same file
    out2 = tmp_path / "f2.csv"
    assert cf.extract_features_to_csv(out2, paths, root=str(tmp_path / "arch"), batch=5) == (12, len(names), 0)
    assert out2.read_bytes() == out.read_bytes()


def test_script_and_bad_inputs(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "arch"
    write_archive(str(root), {"test": 1}, n_classes=4, seed=2)
    out = tmp_path / "feats.csv"
    repo = os.path.join(os.path.dirname(__file__), os.pardir)
    r = subprocess.run([sys.executable, os.path.join(repo, "analysis", "cp_features.py"), "--archive", str(root),
                        "--list", "HOwt_transfer_test.txt", "--out", str(out), "--scheduler", "none"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    paths, names, values = cf.read_feature_csv(out)
    assert len(paths) == 4 and len(names) == 430
    # --sample: a seeded random subset, in list order, with the values of the full run (up to the
    # summation order inside a mosaic of other crops)
    samples = []
    for k in (1, 2):
        r = subprocess.run([sys.executable, os.path.join(repo, "analysis", "cp_features.py"), "--archive", str(root),
                            "--list", "HOwt_transfer_test.txt", "--out", str(tmp_path / f"s{k}.csv"), "--scheduler", "none",
                            "--sample", "2", "--seed", "3"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        samples.append(cf.read_feature_csv(tmp_path / f"s{k}.csv"))
    sub_paths, _, sub_values = samples[0]
    assert samples[1][0] == sub_paths and len(sub_paths) == 2
    rows = [paths.index(p) for p in sub_paths]
    assert rows == sorted(rows)
    np.testing.assert_allclose(sub_values, values[rows], rtol=1e-9, atol=1e-12)

    with open(root / "HOwt_transfer_test.txt", "a") as f:
        f.write("plate01/missing-0-0-0.png 1\n")
    r = subprocess.run([sys.executable, os.path.join(repo, "analysis", "cp_features.py"), "--archive", str(root),
                        "--list", "HOwt_transfer_test.txt", "--out", str(tmp_path / "x.csv"), "--scheduler", "none"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "missing-0-0-0.png" in r.stderr and not (tmp_path / "x.csv").exists()

    bad = tmp_path / "bad.csv"
    bad.write_text("path,a,b\nx.png,1.0,2.0\ny.png,1.0,oops\n")
    with pytest.raises(InputError, match=r"bad.csv:3: column 'b'"):
        cf.read_feature_csv(bad)
    bad.write_text("cell,a\nx.png,1\n")
    with pytest.raises(InputError, match=r"bad.csv:1: header"):
        cf.read_feature_csv(bad)
    bad.write_text("path,a\nx.png,1,2\n")
    with pytest.raises(InputError, match=r"bad.csv:2: 3 fields"):
        cf.read_feature_csv(bad)


def test_external_feature_table_replaces_ours_row_for_row(tmp_path):
    """--from: an external per-cell table (e.g. Chong et al.'s, keyed by archive path) gives the listed
    cells' rows in list order; other cells' rows are ignored; a listed cell without one is an error
    naming it, and nothing is written."""
    import subprocess
    import sys

    root = tmp_path / "arch"
    write_archive(str(root), {"test": 2}, n_classes=4, seed=2)
    listed = [line.split()[0] for line in (root / "HOwt_transfer_test.txt").read_text().splitlines()]
    table = tmp_path / "chong.csv"
    rows = [(p, float(i), 10.0 * i) for i, p in enumerate(listed)] + [("plate99/other-1-1-1.png", 1.0, 2.0)]
    table.write_text("path,AreaShape_Area,Intensity_Mean\n" + "".join(f"{p},{a},{b}\n" for p, a, b in rows[::-1]))
    out = tmp_path / "feats.csv"
    script = os.path.join(os.path.dirname(__file__), os.pardir, "analysis", "cp_features.py")
    r = subprocess.run([sys.executable, script, "--from", str(table), "--archive", str(root),
                        "--list", "HOwt_transfer_test.txt", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    paths, names, values = cf.read_feature_csv(out)
    assert paths == listed and names == ["AreaShape_Area", "Intensity_Mean"]
    np.testing.assert_array_equal(values, [[i, 10.0 * i] for i in range(len(listed))])
    described = cf.describe_feature_csv(out)
    assert described["source"] == "external" and described["n_features"] == 2
    assert "external table (CP_FEATURES)" in described["text"] and "435" in described["text"]
    ours = cf.describe_features(cf.feature_names())
    assert ours["source"] == "cp-measure" and "430" in ours["text"] and "Chong et al. (2015)" in ours["text"]
    table.write_text("path,AreaShape_Area,Intensity_Mean\n" + "".join(f"{p},{a},{b}\n" for p, a, b in rows[1:]))
    r = subprocess.run([sys.executable, script, "--from", str(table), "--archive", str(root),
                        "--list", "HOwt_transfer_test.txt", "--out", str(tmp_path / "x.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and not (tmp_path / "x.csv").exists()
    assert f"chong.csv: no row for cell {listed[0]} of" in r.stderr and f"(1 of {len(listed)} cells" in r.stderr


def _spiral(size=41):
    """A one-pixel corridor winding inwards (a path of ~size^2 / 2 steps), walls zero."""
    img = np.zeros((size, size))
    y, x, dy, dx = 1, 1, 0, 1
    lo, hi = 1, size - 2
    while lo <= hi:
        for _ in range(4 * (hi - lo + 1)):
            img[y, x] = 1.0
            ny, nx = y + dy, x + dx
            if not (lo <= ny <= hi and lo <= nx <= hi) or img[ny, nx]:
                dy, dx = dx, -dy
                ny, nx = y + dy, x + dx
                if not (lo <= ny <= hi and lo <= nx <= hi) or img[ny, nx]:
                    break
            y, x = ny, nx
        lo, hi = lo + 2, hi - 2
        y, x = lo, lo
    return img


def test_reconstruction_equals_scikit_image_bit_for_bit():
    from skimage.morphology import erosion, reconstruction

    from deepyeast.data.segment_cells import CROSS, SQUARE, reconstruct_by_dilation

    rng = np.random.default_rng(11)
    cases = [rng.random((37, 53)), np.round(rng.random((64, 64)) * 4) / 4]  # noise; plateaus of 5 levels
    for footprint in (CROSS, SQUARE):
        for mask in cases:
            ero = erosion(mask, footprint.astype(bool))
            np.testing.assert_array_equal(reconstruct_by_dilation(ero, mask, footprint),
                                          reconstruction(ero, mask, footprint=footprint.astype(bool)))
    spiral = _spiral()
    seed = np.zeros_like(spiral)
    seed[1, 1] = 1.0  # one lit end: the reconstruction walks the whole corridor
    got = reconstruct_by_dilation(seed, spiral, CROSS)
    np.testing.assert_array_equal(got, reconstruction(seed, spiral, footprint=CROSS.astype(bool)))
    assert got.sum() > 500  # the corridor was walked (hundreds of steps), not stopped at a check
    with pytest.raises(ValueError, match="same 2-D shape"):
        reconstruct_by_dilation(seed, spiral[:-1])


def test_granularity_equals_cp_measure():
    from cp_measure.core.measuregranularity import get_granularity

    rng = np.random.default_rng(8)
    imgs = np.stack([cell_crop(rng, k % 4) for k in range(9)])
    masks = np.stack([cf.cell_mask(im[0])[0] for im in imgs])
    labels, pixels = cf._mosaic(imgs, masks)
    for ch in (0, 1):
        binned, pix = cf._bin2x2(labels, pixels[ch])
        ours = cf._granularity(binned, pix, len(imgs))
        theirs = get_granularity(binned, pix, subsample_size=1.0, image_sample_size=1.0,
                                 element_size=cf.GRANULARITY_ELEMENT, granular_spectrum_length=cf.GRANULARITY_SPECTRUM)
        assert sorted(ours) == sorted(theirs) == [f"Granularity_{k}" for k in range(1, cf.GRANULARITY_SPECTRUM + 1)]
        for k in ours:
            np.testing.assert_array_equal(ours[k], theirs[k])
        assert np.abs(np.column_stack(list(ours.values()))).sum() > 0  # a spectrum, not zeros


def test_gabor_equals_centrosome():
    import scipy.ndimage as ndi
    from centrosome.filter import gabor

    rng = np.random.default_rng(12)
    imgs = np.stack([cell_crop(rng, k % 4) for k in range(6)])
    masks = np.stack([cf.cell_mask(im[0])[0] for im in imgs])
    labels, pixels = cf._mosaic(imgs, masks)
    n = len(imgs)
    ours = cf._gabor(labels, {0: pixels[0], 1: pixels[1]}, n)
    index = np.arange(1, n + 1)
    for ch in (0, 1):
        for scale in cf.TEXTURE_SCALES:
            best = np.zeros(n)
            for a in range(cf.GABOR_ANGLES):
                g = gabor(pixels[ch], labels, scale, np.pi * a / cf.GABOR_ANGLES)
                re, im = np.asarray(ndi.sum(g.real, labels, index)), np.asarray(ndi.sum(g.imag, labels, index))
                best = np.maximum(best, np.sqrt(re ** 2 + im ** 2))
            np.testing.assert_array_equal(ours[ch][scale], best)
            assert (best > 0).all()
