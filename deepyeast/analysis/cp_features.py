"""CellProfiler-style features of cell crops, the random-forest baseline's input.

The paper's baseline describes each cell by about 435 CellProfiler features.
We compute the same families with ``cp-measure`` (a Python port of
CellProfiler's measurement modules) plus CellProfiler's Gabor texture (via
``centrosome``, CellProfiler's own image library, which cp-measure lacks);
Granularity is our own implementation of the same algorithm
(:func:`_granularity`), giving cp-measure's values bit for bit, faster (``bench/bench_rf.py --against``):

=========================  =====================================  ==========
family                     measured on                            features
=========================  =====================================  ==========
AreaShape (size, shape,    cell mask                              86
central/normalized/Hu
moments, Zernike, Feret)
Intensity (incl. edge)     marker, protein                        2 x 15
Haralick texture           marker, protein; scales 3 and 5 px,    2 x 104
                           4 directions, 64 gray levels
Gabor texture              marker, protein; scales 3 and 5 px,    2 x 2
                           best of 4 angles
Granularity                marker, protein; spectrum of 6 on the  2 x 6
                           2x2-binned crop
RadialDistribution         marker, protein; 4 scaled rings        2 x 12
RadialDistribution         marker, protein; magnitudes up to      2 x 30
Zernike                    degree 9
Correlation                marker vs protein (Pearson, slope,     6
                           Manders, RWC)
=========================  =====================================  ==========

``len(feature_names()) == 430``.  These are not the features the paper's forest
used: Chong et al. (2015) ran CellProfiler on whole micrographs and measured 435
features per segmented cell; we measure each 64 x 64 crop on its own with
cp-measure, because the published archive holds crops only.  Every report line
with a forest number says so (:func:`describe_features`); a user holding
per-cell tables of other features (Chong et al.'s, say) can use them instead
(:func:`import_feature_table`, ``CP_FEATURES=DIR`` in the pipeline).  Features that only give
the cell's position inside the crop (centres, bounding boxes, raw spatial
moments, intensity locations) and ones that are constant by construction
(order-0/1 normalized moments, zero first central moments) are left out.
Texture uses 64 gray levels (CellProfiler 2 used 8, CellProfiler 3 256) to
keep the cost at ~1 ms per crop and scale.

Cell mask
---------
The object is found in the red marker channel, which fills the cytoplasm of
every cell: Gaussian smoothing (sigma 1 px), Otsu threshold, hole filling, removal of
specks under ``MIN_OBJECT_AREA`` pixels, and the connected component containing the crop centre (or, when the centre is
background, the component nearest to it).  A crop with no foreground at all
(an empty area) falls back to a central disk of radius ``IMAGE_SIZE // 4``;
``cell_mask`` reports that.

Speed
-----
cp-measure works per label image, vectorised over objects, so crops are
measured in batches: each batch is tiled into one mosaic with an 8-pixel zero
gutter around every tile, one label per cell.  Every module used here is
local to an object, so a cell's features do not depend on the other cells of
its batch (a test checks this), with one exception: a Zernike moment can
differ by the one pixel lying exactly on the object's minimum enclosing
circle, which floating-point rounding of the mosaic coordinates puts in or
out.  Batches are fixed by the input order, so a run is reproducible.
Granularity runs on the exactly 2x2-binned mosaic (CellProfiler's own
subsampling interpolates with a ratio that depends on the image size, so it
would mix neighbouring tiles); the CellProfiler default subsampling of 0.25
would shrink a yeast cell to ~10 px and erase the 1-3 px puncta the classes
differ by.  Granularity's reconstruction steps (six per channel) were 45% of the
time with scikit-image's sort-based reconstruction; OpenCV's geodesic dilations
give the same arrays (:func:`deepyeast.data.segment_cells.reconstruct_by_dilation`).
Chunks of cells run as tasks on a Dask cluster or in this process
(:func:`iter_features`), with identical output.

Intensities are the uint8 crop scaled to [0, 1] (``value / 255``), as
CellProfiler loads 8-bit images.

The same on every CPU
---------------------
numpy and OpenBLAS pick their SIMD kernels per CPU (AVX512, AVX2, ...), and the kernels round
differently in the last bits: on the same crops, a quarter of the float64 values differed between
this machine's kernels and an AVX2 CPU's (at most 1.2e-10 relative; ``bench/bench_cpu_dependence.py``).
Random-forest splits see such differences, so a forest trained on another CPU type came out different.
Every feature is therefore rounded to :data:`FEATURE_BITS` significant bits (float32's precision,
:func:`round_features`, exact arithmetic on any CPU) before it leaves a task: the measured differences
all vanish, so the forest's input, and with it the forest, is the same on any CPU unless a value
lies within about 1e-10 (relative) of a rounding boundary.
"""

import csv
import logging
import math
import os
import warnings

import numpy as np

from deepyeast.constants import IMAGE_SIZE, MARKER_CHANNEL, N_CHANNELS, PAPER_FOREST, PROTEIN_CHANNEL
from deepyeast.utils.io import InputError, atomic_path, csv_header, open_input

_log = logging.getLogger(__name__)

TEXTURE_SCALES = (3, 5)
"""Haralick / Gabor texture scales, pixels."""
TEXTURE_GRAY_LEVELS = 64
GABOR_ANGLES = 4
GRANULARITY_SPECTRUM = 6
GRANULARITY_ELEMENT = 10
RADIAL_BINS = 4
ZERNIKE_DEGREE = 9
MIN_OBJECT_AREA = 16
"""Marker components smaller than this (pixels) are specks, never the cell."""
TILE_GUTTER = 8
"""Zero pixels around each crop in a measurement mosaic (even, for the 2x2 binning)."""
DEFAULT_BATCH = 64
"""Crops per mosaic."""

CHANNEL_PREFIX = {MARKER_CHANNEL: "Marker", PROTEIN_CHANNEL: "Protein"}

_POSITIONAL = frozenset(
    [
        "Center_X", "Center_Y",
        "BoundingBoxMinimum_X", "BoundingBoxMaximum_X", "BoundingBoxMinimum_Y", "BoundingBoxMaximum_Y",
        "Location_CenterMassIntensity_X", "Location_CenterMassIntensity_Y", "Location_CenterMassIntensity_Z",
        "Location_MaxIntensity_X", "Location_MaxIntensity_Y", "Location_MaxIntensity_Z",
    ]
)
_CONSTANT = frozenset(
    [
        "CentralMoment_0_1", "CentralMoment_1_0",
        "NormalizedMoment_0_0", "NormalizedMoment_0_1", "NormalizedMoment_1_0",
        "InertiaTensor_1_0",  # equals InertiaTensor_0_1
    ]
)


def _keep(name):
    return name not in _POSITIONAL and name not in _CONSTANT and not name.startswith("SpatialMoment_")


# --------------------------------------------------------------------------- cell mask


def cell_mask(marker):
    """Mask of the cell at the centre of a crop, from its marker channel.

    marker: uint8 (or float) ``H x W``.  Returns ``(mask bool H x W, fallback bool)``;
    ``fallback`` is True when the crop had no foreground and a central disk was used.
    """
    import scipy.ndimage as ndi
    from skimage.filters import threshold_otsu

    img = ndi.gaussian_filter(np.asarray(marker, dtype=np.float64), 1.0)
    h, w = img.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    if img.max() - img.min() > 1e-6:
        fg = img > threshold_otsu(img)
        fg = ndi.binary_fill_holes(fg)
        lab, n = ndi.label(fg)
        if n:
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            small = sizes < MIN_OBJECT_AREA
            small[0] = False
            if small.any():
                lab[small[lab]] = 0
                lab, n = ndi.label(lab > 0)
        if n:
            centre = lab[int(round(cy)), int(round(cx))]
            if centre == 0:
                # the component nearest to the centre
                dist = ndi.distance_transform_edt(lab == 0, return_indices=True)[1]
                iy, ix = dist[:, int(round(cy)), int(round(cx))]
                centre = lab[iy, ix]
            return lab == centre, False
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= (min(h, w) // 4) ** 2, True


# --------------------------------------------------------------------------- measurement


def _mosaic(images, masks):
    """Tile crops into one mosaic: (labels int32 Y x X, float64 C x Y x X pixels in [0,1])."""
    n, c, h, w = images.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    sy, sx = h + TILE_GUTTER, w + TILE_GUTTER
    labels = np.zeros((TILE_GUTTER + rows * sy, TILE_GUTTER + cols * sx), np.int32)
    pixels = np.zeros((c,) + labels.shape, np.float64)
    for k in range(n):
        r, q = divmod(k, cols)
        y0, x0 = TILE_GUTTER + r * sy, TILE_GUTTER + q * sx
        labels[y0:y0 + h, x0:x0 + w][masks[k]] = k + 1
        pixels[:, y0:y0 + h, x0:x0 + w] = images[k] / 255.0
    return labels, pixels


def _shape_features(labels):
    from cp_measure.core import measureobjectsizeshape as m

    out = {}
    out.update(m.get_sizeshape(labels, None))
    out.update(m.get_zernike(labels, None))
    out.update(m.get_feret(labels, None))
    return {f"AreaShape_{k}": v for k, v in out.items() if _keep(k)}


def _bin2x2(labels, pixels):
    """Halve a mosaic's resolution exactly: 2x2 mean of pixels; a 2x2 block joins
    an object when at least 2 of its pixels do (any 1, for an object that would vanish)."""
    h, w = labels.shape
    pix = pixels.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    blocks = labels.reshape(h // 2, 2, w // 2, 2)
    top = blocks.max(axis=(1, 3))
    count = (blocks > 0).sum(axis=(1, 3))
    binned = np.where(count >= 2, top, 0).astype(labels.dtype)
    present = np.zeros(int(labels.max()) + 1, bool)
    present[binned.ravel()] = True
    lost = np.flatnonzero(~present[1:]) + 1
    if lost.size:
        fill = np.isin(top, lost)
        binned[fill] = top[fill]
    return binned, pix


def _granularity(labels, pixels, n_objects):
    """CellProfiler's MeasureGranularity without subsampling (Ravkin's granular spectrum).

    labels: int ``H x W`` (objects ``1..n_objects``); pixels: float ``H x W``.  The background is
    the opening by a disk of radius :data:`GRANULARITY_ELEMENT` (erosion then dilation, borders
    mirrored as scikit-image does), subtracted and clipped at 0; then :data:`GRANULARITY_SPECTRUM`
    times: erode by the 3 x 3 cross, reconstruct under the background-free image
    (:func:`deepyeast.data.segment_cells.reconstruct_by_dilation`), and report the fall of each
    object's mean from the step before, in percent of its mean in ``pixels``.  Returns
    ``{"Granularity_k": float64 n_objects}``, the values cp-measure's ``get_granularity(...,
    subsample_size=1, image_sample_size=1)`` gives (tests/test_cp_features.py compares them).
    """
    import scipy.ndimage as ndi
    import skimage.morphology

    from deepyeast.data.crop_png import quiet_cv2
    from deepyeast.data.segment_cells import CROSS, reconstruct_by_dilation

    cv2 = quiet_cv2()
    pixels = np.asarray(pixels, dtype=np.float64)
    # OpenCV's BORDER_REFLECT mirrors as scipy.ndimage's "reflect", scikit-image's default mode
    disk = skimage.morphology.disk(GRANULARITY_ELEMENT).astype(np.uint8)
    background = cv2.dilate(cv2.erode(pixels, disk, borderType=cv2.BORDER_REFLECT), disk,
                            borderType=cv2.BORDER_REFLECT)
    image = pixels - background
    image[image < 0] = 0
    index = np.arange(1, n_objects + 1)
    current = np.asarray(ndi.mean(pixels, labels, index), dtype=np.float64)
    start = np.maximum(current, np.finfo(float).eps)
    eroded = image
    out = {}
    for k in range(1, GRANULARITY_SPECTRUM + 1):
        eroded = cv2.erode(eroded, CROSS, borderType=cv2.BORDER_REFLECT)
        rec = reconstruct_by_dilation(eroded, image, CROSS)
        new = np.asarray(ndi.mean(rec, labels, index), dtype=np.float64)
        out[f"Granularity_{k}"] = (current - new) * 100 / start
        current = new
    return out


def _gabor(labels, channels, n_objects):
    """CellProfiler's Gabor texture of every object in each channel, at each of :data:`TEXTURE_SCALES`.

    labels: int ``H x W`` (objects ``1..n_objects``); channels: dict name -> float ``H x W`` pixels.
    Per object and scale: the best over :data:`GABOR_ANGLES` angles of ``|sum of the filtered
    object|``, the filter a Gaussian-windowed complex wave centred on the object's centre of mass
    with sigma = its equivalent radius / 3, made zero-mean over the object, on the object's pixels
    minus their mean (``centrosome.filter.gabor``, CellProfiler's MeasureTexture).  The object
    geometry and each (scale, angle)'s filter are computed once for both channels (centrosome
    recomputes them per call); the arithmetic is centrosome's, operation for operation, so the
    values are the same bit for bit (tests/test_cp_features.py).  Returns
    ``{name: {scale: float64 n_objects}}``.
    """
    import scipy.ndimage as ndi
    from centrosome.cpmorphology import centers_of_labels

    objects = np.arange(n_objects)
    centers = centers_of_labels(labels)
    areas = np.array(ndi.sum(np.ones(labels.shape), labels, np.arange(n_objects, dtype=np.int32) + 1))
    inside = labels > 0
    i, j = np.mgrid[0:labels.shape[0], 0:labels.shape[1]].astype(float)
    i, j = i[inside], j[inside]
    lm = labels[inside] - 1
    i -= centers[0, lm]
    j -= centers[1, lm]
    sigma = (np.sqrt(areas / np.pi) / 3.0)[lm]
    g_exp = 1000.0 / (2.0 * np.pi * sigma ** 2) * np.exp(-(i ** 2 + j ** 2) / (2 * sigma ** 2))
    centred = {}
    for name, pixels in channels.items():
        values = pixels[inside]
        centred[name] = values - np.array(ndi.mean(values, lm, objects))[lm]
    best = {name: {scale: np.zeros(n_objects) for scale in TEXTURE_SCALES} for name in channels}
    for scale in TEXTURE_SCALES:
        for a in range(GABOR_ANGLES):
            theta = np.pi * a / GABOR_ANGLES
            g_angle = 2 * np.pi / scale * (i * np.cos(theta) + j * np.sin(theta))
            g_cos = g_exp * np.cos(g_angle)
            g_sin = g_exp * np.sin(g_angle)
            g_cos -= np.array(ndi.mean(g_cos, lm, objects))[lm]
            g_sin -= np.array(ndi.mean(g_sin, lm, objects))[lm]
            for name, norm in centred.items():
                re = np.asarray(ndi.sum(norm * g_cos, lm, objects))
                im = np.asarray(ndi.sum(norm * g_sin, lm, objects))
                best[name][scale] = np.maximum(best[name][scale], np.sqrt(re ** 2 + im ** 2))
    return best


def _channel_features(labels, pixels, n_objects, gabor):
    """One channel's features; ``gabor``: its :func:`_gabor` values, scale -> float64 n_objects."""
    from cp_measure.core import (
        measureobjectintensity,
        measureobjectintensitydistribution,
        measuretexture,
    )

    out = {k: v for k, v in measureobjectintensity.get_intensity(labels, pixels).items() if _keep(k)}
    for scale in TEXTURE_SCALES:
        for k, v in measuretexture.get_texture(labels, pixels, scale=scale, gray_levels=TEXTURE_GRAY_LEVELS).items():
            out[f"Texture_{k}"] = v
    for scale in TEXTURE_SCALES:
        out[f"Texture_Gabor_{scale}"] = gabor[scale]
    binned_labels, binned_pixels = _bin2x2(labels, pixels)
    out.update(_granularity(binned_labels, binned_pixels, n_objects))
    out.update(measureobjectintensitydistribution.get_radial_distribution(labels, pixels, bin_count=RADIAL_BINS))
    zern = measureobjectintensitydistribution.get_radial_zernikes(labels, pixels, zernike_degree=ZERNIKE_DEGREE)
    out.update({k: v for k, v in zern.items() if "ZernikeMagnitude" in k})
    return out


def _correlation_features(labels, marker, protein):
    from cp_measure.core import measurecolocalization as m

    out = {}
    out.update(m.get_correlation_pearson(protein, marker, labels))
    out.update(m.get_correlation_manders_fold(protein, marker, labels))
    out.update(m.get_correlation_rwc(protein, marker, labels))
    return out


def measure_crops(images, masks=None):
    """Features of a batch of crops.

    images: uint8 ``N x N_CHANNELS x H x W`` (channel 0 marker, 1 protein).
    masks: optional bool ``N x H x W`` cell masks; computed with ``cell_mask`` when None.
    Returns ``(names list[str], values float64 N x F)``; a value may be NaN where
    CellProfiler's measurement is undefined (e.g. texture of a tiny object).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != N_CHANNELS:
        raise ValueError(f"images must be N x {N_CHANNELS} x H x W, got shape {images.shape}")
    n = images.shape[0]
    if masks is None:
        masks = np.stack([cell_mask(img[MARKER_CHANNEL])[0] for img in images]) if n else np.zeros((0,) + images.shape[2:], bool)
    masks = np.asarray(masks, dtype=bool)
    if n == 0:
        names = feature_names()
        return names, np.zeros((0, len(names)))
    empty = np.flatnonzero(~masks.reshape(n, -1).any(axis=1))
    if empty.size:
        raise ValueError(f"crop(s) {empty.tolist()} have an empty cell mask")
    labels, pixels = _mosaic(images, masks)
    columns = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        columns.update(_shape_features(labels))
        gabor = _gabor(labels, {ch: pixels[ch] for ch in (MARKER_CHANNEL, PROTEIN_CHANNEL)}, n)
        for ch in (MARKER_CHANNEL, PROTEIN_CHANNEL):
            prefix = CHANNEL_PREFIX[ch]
            for k, v in _channel_features(labels, pixels[ch], n, gabor[ch]).items():
                columns[f"{prefix}_{k}"] = v
        for k, v in _correlation_features(labels, pixels[MARKER_CHANNEL], pixels[PROTEIN_CHANNEL]).items():
            columns[k] = v
    names = list(columns)
    values = np.column_stack([np.asarray(columns[k], dtype=np.float64).reshape(n) for k in names])
    return names, values


_NAMES = None


def feature_names():
    """The feature column names, in output order (computed once from a dummy crop)."""
    global _NAMES
    if _NAMES is None:
        yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
        disk = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 15 ** 2
        img = np.zeros((1, N_CHANNELS, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        img[0, :, disk] = 100
        _NAMES = measure_crops(img, disk[None])[0]
    return list(_NAMES)


FEATURE_BITS = 24
"""Significant bits every feature keeps (float32's 24): see "The same on every CPU" above."""


def round_features(values, bits=FEATURE_BITS):
    """Round float values to ``bits`` significant bits (float64 array of the same shape; NaN, inf and 0
    stay).  frexp, ldexp and round are exact, so the result is the same on every CPU."""
    mantissa, exponent = np.frexp(np.asarray(values, dtype=np.float64))
    return np.ldexp(np.round(np.ldexp(mantissa, bits)), exponent - bits)


def measure_chunk_task(chunk, shared=None):
    """One task of :func:`iter_features`: measure a chunk of crops given as PNG bytes.

    chunk: list of ``(name, png bytes)`` (name only for error messages).  Returns
    ``(names list[str], values float64 n x F rounded by :func:`round_features`, n_fallback_masks int)``.  Runs in a
    Dask worker or here; it reads no file, so workers need not see the archive.
    """
    from deepyeast.data.crop_png import decode_crop

    images = np.stack([decode_crop(data, name) for name, data in chunk])
    masks = []
    fallbacks = 0
    for img in images:
        m, fb = cell_mask(img[MARKER_CHANNEL])
        masks.append(m)
        fallbacks += fb
    names, values = measure_crops(images, np.stack(masks))
    return names, round_features(values), fallbacks


def _read_chunk(files):
    from deepyeast.data.crop_png import read_crop_bytes

    return [(f, read_crop_bytes(f)) for f in files]


def iter_features(paths, root=".", scheduler="none", jobs=1, batch=DEFAULT_BATCH, progress=None, log=None):
    """Features of the crops at ``root/path``, chunk by chunk in input order.

    Each chunk of ``batch`` crops is one task (:func:`measure_chunk_task`) on
    ``scheduler`` (see :class:`deepyeast.analysis.cluster.TaskRunner`; "none": here).
    The chunks are fixed by the input order, so the values are identical whatever
    the scheduler and the number of workers.  Crops are read here and sent with
    their task; at most 4 chunks per worker are in flight, so memory stays flat.
    Yields ``(chunk paths list[str], values float64 n x F, n_fallback_masks)``.
    """
    from deepyeast.analysis.cluster import TaskRunner
    from deepyeast.utils.progress import Progress

    paths = list(paths)
    files = [os.path.join(root, p) for p in paths]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise InputError(f"{missing[0]}: no such crop ({len(missing)} of {len(files)} missing)")
    starts = range(0, len(files), batch)
    names = feature_names()
    bar = Progress(total=len(files), desc="cp features", unit="cell", enabled=None if progress is not False else False)
    try:
        with TaskRunner(scheduler, jobs, log=log or _log.info) as runner:
            chunks = (_read_chunk(files[i:i + batch]) for i in starts)
            for i, (got, values, fallbacks) in zip(starts, runner.imap(measure_chunk_task, chunks,
                                                                          window=runner.default_window())):
                if got != names:
                    raise RuntimeError("feature names differ between batches (internal error)")
                bar.update(len(values))
                yield paths[i:i + batch], values, fallbacks
    finally:
        bar.close()


def extract_features(paths, root=".", scheduler="none", jobs=1, batch=DEFAULT_BATCH, progress=None):
    """Features of the crops at ``root/path`` for each path (in order); see :func:`iter_features`.

    Returns ``(names list[str], values float64 N x F, n_fallback_masks int)``.
    """
    names = feature_names()
    parts, fallbacks = [], 0
    for _, values, fb in iter_features(paths, root, scheduler, jobs, batch, progress):
        parts.append(values)
        fallbacks += fb
    values = np.concatenate(parts) if parts else np.zeros((0, len(names)))
    return names, values, int(fallbacks)


def extract_features_to_csv(out_csv, paths, root=".", scheduler="none", jobs=1, batch=DEFAULT_BATCH,
                            progress=None, log=None):
    """Write the features CSV of the crops at ``root/path`` chunk by chunk (atomically, flat memory).

    The file is the one :func:`write_feature_csv` writes for :func:`extract_features`'
    output.  Returns ``(n_cells, n_features, n_fallback_masks)``.
    """
    names = feature_names()
    n, fallbacks = 0, 0
    with atomic_path(out_csv) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path"] + list(names))
            for chunk_paths, values, fb in iter_features(paths, root, scheduler, jobs, batch, progress, log):
                _write_rows(w, chunk_paths, values)
                n += len(chunk_paths)
                fallbacks += fb
    return n, len(names), int(fallbacks)


# --------------------------------------------------------------------------- CSV


def write_feature_csv(path, cell_paths, names, values):
    """Write ``path,<feature_1>,...`` (one row per cell, ``repr`` floats) atomically."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(cell_paths), len(names)):
        raise ValueError(f"values shape {values.shape} != ({len(cell_paths)}, {len(names)})")
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path"] + list(names))
            _write_rows(w, cell_paths, values)


def _write_rows(writer, cell_paths, values):
    for p, row in zip(cell_paths, np.asarray(values, dtype=np.float64).tolist()):
        writer.writerow([p] + [repr(v) for v in row])


def read_feature_csv(path):
    """Read a features CSV -> (paths list[str], names list[str], values float64 N x F).

    Raises ``InputError`` naming the file and row/column on a bad header, a short
    row or a non-numeric value ("nan" is accepted and kept as NaN).
    """
    with open_input(path, "features table", newline="") as f:
        reader = csv.reader(f)
        header = csv_header(reader, path, "a header 'path,<feature>,...'")
        if not header or header[0] != "path" or len(header) < 2:
            raise InputError(f"{path}:1: header must start with 'path' followed by feature names, got {header[:3]}")
        names = header[1:]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise InputError(f"{path}:1: duplicate feature column(s) {dup[:5]}")
        paths, rows = [], []
        for lineno, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise InputError(f"{path}:{lineno}: {len(row)} fields, header has {len(header)}")
            try:
                rows.append([float(v) for v in row[1:]])
            except ValueError:
                bad = next(i for i, v in enumerate(row[1:]) if not _is_float(v))
                raise InputError(f"{path}:{lineno}: column {names[bad]!r}: {row[bad + 1]!r} is not a number") from None
            paths.append(row[0])
    if len(set(paths)) != len(paths):
        raise InputError(f"{path}: duplicate cell path(s), e.g. {next(p for p in paths if paths.count(p) > 1)!r}")
    values = np.asarray(rows, dtype=np.float64).reshape(len(paths), len(names))
    return paths, names, values


def _is_float(v):
    try:
        float(v)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- provenance, external tables

PAPER_N_FEATURES = PAPER_FOREST["n_features"]
"""CellProfiler features per cell in the paper's forest (Chong et al. 2015, whole micrographs)."""


def describe_features(names):
    """What a feature table holds, for the report next to every forest number.

    ``names``: its feature columns.  Returns ``{source, n_features, short, text}``: ``source``
    "cp-measure" when the columns are exactly ours (:func:`feature_names`), else "external".
    """
    names = list(names)
    n = len(names)
    if names == feature_names():
        return {"source": "cp-measure", "n_features": n,
                "short": f"CellProfiler-style features ({n} per crop, cp-measure)",
                "text": f"our {n} CellProfiler-style features, measured on each 64x64 crop with cp-measure; the "
                        f"paper's forest used the {PAPER_N_FEATURES} CellProfiler features Chong et al. (2015) "
                        "measured per cell on whole micrographs, which the published archive does not hold "
                        "(CP_FEATURES=DIR uses such a table)."}
    return {"source": "external", "n_features": n,
            "short": f"external per-cell features ({n})",
            "text": f"{n} per-cell features from an external table (CP_FEATURES), in place of our {len(feature_names())} "
                    f"per-crop cp-measure features; the paper's forest used the {PAPER_N_FEATURES} CellProfiler "
                    "features of Chong et al. (2015)."}


def describe_feature_csv(path):
    """:func:`describe_features` of a features CSV's header."""
    with open_input(path, "features table", newline="") as f:
        header = next(csv.reader(f), None)
    if not header or header[0] != "path":
        raise InputError(f"{path}:1: header must start with 'path' followed by feature names")
    return describe_features(header[1:])


def import_feature_table(table_csv, cell_paths, out_csv, list_name="the list"):
    """Write the rows of an external per-cell feature table for ``cell_paths`` to ``out_csv``.

    ``table_csv``: ``path,<feature>,...`` keyed by archive-relative crop path (other cells' rows
    are ignored, so one table may serve every split).  Every cell of ``cell_paths`` needs a row
    (an :class:`InputError` names the first missing one and the count); rows are written in
    ``cell_paths`` order, atomically.  Returns ``(names, n_rows)``.
    """
    paths, names, values = read_feature_csv(table_csv)
    index = {p: i for i, p in enumerate(paths)}
    missing = [p for p in cell_paths if p not in index]
    if missing:
        raise InputError(f"{table_csv}: no row for cell {missing[0]} of {list_name} ({len(missing)} of "
                         f"{len(cell_paths)} cells have none; rows are keyed by the archive-relative path)")
    rows = np.array([index[p] for p in cell_paths], dtype=np.int64)
    write_feature_csv(out_csv, list(cell_paths), names, values[rows] if len(rows) else np.zeros((0, len(names))))
    return names, len(rows)
