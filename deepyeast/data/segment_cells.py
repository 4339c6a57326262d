"""Find yeast cells in micrographs from the cytosolic marker channel.

The marker (mCherry in the DeepYeast screens) fills each cell body, so a cell
is a bright blob with a darker vacuole inside.  :func:`segment_marker` turns
one marker image into a label mask (0 = background, k > 0 = cell k):

1. background correction: a smoothed grey opening with a square wider than a
   cell (``background_radius``) estimates the uneven background and
   illumination, which is subtracted;
2. denoising: a Gaussian of ``smooth_sigma`` pixels;
3. threshold: Otsu's (or Li's) on the corrected image, times
   ``threshold_factor``, and never below ``min_contrast`` robust noise
   standard deviations above the background (so an empty field stays empty);
4. holes up to ``max_hole_area`` (vacuoles) are filled;
5. touching cells are split by a seeded watershed on the distance transform:
   its maxima that stand at least ``split_depth`` pixels above their
   surroundings (h-maxima) seed one cell each;
6. filters: objects smaller than ``min_area`` (specks, debris) or larger than
   ``max_area`` (clumps) are dropped, and cells within ``border_margin`` pixels
   of the image edge (cut by it, so their centre is wrong) are dropped.

Defaults fit screens imaged like the paper's (a 64 x 64 crop holds one cell:
mother cells ~20-35 px across, a bud counted with its mother); they were
chosen on the synthetic screen's fields of one seed and scored on another's
(``bench/bench_segment.py``, ``bench/RESULTS.md``).  At another magnification
scale ``background_radius``, ``min_area``, ``max_area``, ``max_hole_area`` and
``split_depth`` with the cell diameter.

Then :func:`measure_cells` gives each cell's id, centroid and area, and
:func:`deepyeast.data.crop_cells.crop_cells` cuts the crops;  :func:`cells_and_crops`
does both.  :func:`iter_screen_cells` yields the cells and crops of every
micrograph of an images table (labels optional), for classifying a new
screen.  :func:`segment_screen` runs a whole images table (the input of
``data_prep/crop_cells.py``) and writes masks plus the same table with a
``mask`` column.  :func:`match_objects` scores a mask against a true one
(object-level F1 at IoU >= 0.5, centroid error).
"""

import collections
import csv
import dataclasses
import logging
import os

import numpy as np

from deepyeast.constants import CLASS_NAMES, IMAGE_SIZE
from deepyeast.data.crop_png import quiet_cv2
from deepyeast.data.crop_cells import crop_cells, measure_cells
from deepyeast.data.micrographs import MicrographFormat, read_mask, read_row_micrograph
from deepyeast.data.screen_tables import Rejects, read_images_table
from deepyeast.utils.io import InputError, atomic_folder, atomic_write_text, open_input, write_csv
from deepyeast.utils.progress import progress as progress_report

log = logging.getLogger(__name__)

THRESHOLD_METHODS = ("otsu", "li")


@dataclasses.dataclass(frozen=True)
class SegmentParams:
    """Parameters of :func:`segment_marker` (pixels unless said otherwise)."""

    background_radius: int = 40
    """Half-width of the square of the grey opening that estimates the background; > the largest cell radius."""
    smooth_sigma: float = 1.0
    """Gaussian denoising before thresholding."""
    threshold_method: str = "otsu"
    """``otsu`` or ``li``, computed on the background-corrected, smoothed marker."""
    threshold_factor: float = 0.7
    """Multiplies the automatic threshold (< 1 takes in the dimmer, blurred cell edges)."""
    min_contrast: float = 5.0
    """The threshold is at least this many robust noise standard deviations above the background."""
    max_hole_area: int = 400
    """Holes in the foreground up to this area (vacuoles) are filled, larger ones (between cells) are not."""
    split_depth: float = 3.0
    """h of the h-maxima of the (smoothed) distance transform that seed the watershed; larger = fewer splits."""
    min_area: int = 150
    """Objects smaller than this (debris, specks, fragments) are dropped."""
    max_area: int = 3000
    """Objects larger than this (unsplit clumps) are dropped."""
    border_margin: int = 1
    """Cells with a pixel within this many pixels of the image edge are dropped (0 keeps them)."""

    def __post_init__(self):
        if self.threshold_method not in THRESHOLD_METHODS:
            raise InputError(f"threshold method {self.threshold_method!r} is not one of {', '.join(THRESHOLD_METHODS)}")
        for name in ("background_radius", "min_area", "max_area", "max_hole_area", "border_margin"):
            if getattr(self, name) < 0:
                raise InputError(f"segmentation parameter {name} must be >= 0, got {getattr(self, name)}")
        if self.min_area > self.max_area:
            raise InputError(f"min_area {self.min_area} > max_area {self.max_area}")
        if self.threshold_factor <= 0 or self.smooth_sigma < 0 or self.split_depth < 0:
            raise InputError("threshold_factor must be > 0, smooth_sigma and split_depth >= 0")


PARAM_HELP = {
    "background_radius": "half-width (px) of the grey opening that estimates the background; above the largest "
                         "cell radius",
    "smooth_sigma": "Gaussian denoising (px) before thresholding",
    "threshold_method": "automatic threshold on the corrected marker",
    "threshold_factor": "multiplies the automatic threshold (< 1 takes in dim, blurred cell edges)",
    "min_contrast": "threshold at least this many noise SDs above the background (empty fields stay empty)",
    "max_hole_area": "fill holes (vacuoles) up to this area (px)",
    "split_depth": "h (px) of the distance-transform maxima seeding the watershed; larger splits fewer cells",
    "min_area": "drop objects smaller than this (px): debris, specks",
    "max_area": "drop objects larger than this (px): unsplit clumps",
    "border_margin": "drop cells within this many px of the image edge (0 keeps them)",
}
"""One line of help per :class:`SegmentParams` field: the command-line options of every step that
segments (``--background-radius`` ...; :func:`deepyeast.launcher.add_segment_params`)."""

# --------------------------------------------------------------------------- one micrograph

def correct_background(marker, radius=40, sigma=1.0):
    """Background-corrected, denoised marker: float32 ``H x W``, background ~0.

    ``marker``: ``H x W`` array of any numeric type.  The background is the
    grey opening of the smoothed image with a ``2 radius + 1`` square (an
    erosion, then a dilation of the eroded image continued past the edges by
    point reflection, so a tilted background stays tilted up to the edge),
    smoothed with sigma ``radius / 4``; ``radius = 0`` subtracts the median only.
    OpenCV's kernels (separable Gaussians, flat min/max filters; scipy.ndimage's
    border modes: reflect, nearest) do the work; the grey opening is exact, the
    Gaussians agree with ``scipy.ndimage.gaussian_filter`` (truncated at 4 sigma)
    to float32 rounding.
    """
    cv2 = quiet_cv2()
    img = np.asarray(marker, np.float32)
    if img.ndim != 2:
        raise ValueError(f"marker must be a 2-D image, got shape {img.shape}")
    if sigma > 0:
        img = _gaussian(cv2, img, sigma, cv2.BORDER_REFLECT)
    if radius <= 0:
        return img - np.float32(np.median(img))
    size = 2 * int(radius) + 1
    square = np.ones((size, size), np.uint8)
    eroded = cv2.erode(img, square, borderType=cv2.BORDER_REFLECT)
    smooth = radius / 4.0
    pad = int(radius) + int(np.ceil(4 * smooth))
    ext = np.pad(eroded, pad, mode="reflect", reflect_type="odd")
    bg = _gaussian(cv2, cv2.dilate(ext, square, borderType=cv2.BORDER_REPLICATE), smooth, cv2.BORDER_REPLICATE)
    bg = bg[pad:pad + img.shape[0], pad:pad + img.shape[1]]
    return img - np.minimum(bg, img)


def _gaussian(cv2, img, sigma, border):
    """``scipy.ndimage.gaussian_filter(img, sigma)`` (truncate 4) with OpenCV: float32 ``H x W``."""
    k = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(img, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=border)


def noise_sd(corrected):
    """Robust standard deviation of the background of a corrected image (MAD below the median)."""
    v = np.asarray(corrected, np.float32).ravel()
    med = np.median(v)
    low = v[v <= med]
    return float(1.4826 * np.median(med - low)) if low.size else 0.0


def foreground(corrected, params=SegmentParams()):
    """Thresholded, hole-filled cell foreground (bool ``H x W``) and the threshold used (float)."""
    from skimage.filters import threshold_li, threshold_otsu
    from skimage.morphology import remove_small_holes
    img = np.asarray(corrected, np.float32)
    floor = float(np.median(img)) + params.min_contrast * noise_sd(img)
    if float(img.max(initial=0)) <= floor:
        return np.zeros(img.shape, bool), floor
    auto = threshold_otsu(img) if params.threshold_method == "otsu" else threshold_li(img)
    level = max(float(auto) * params.threshold_factor, floor)
    fg = img > level
    if params.max_hole_area > 0:
        fg = remove_small_holes(fg, max_size=params.max_hole_area)
    return fg, level


def split_touching(fg, split_depth=3.0):
    """Label a foreground, splitting touching cells: int32 ``H x W``.

    Seeds are the h-maxima (``h = split_depth`` pixels) of the distance
    transform (smoothed with sigma 1); the watershed of the negated distance
    from them fills each connected component.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed
    fg = np.asarray(fg, bool)
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    dist = ndi.gaussian_filter(distance_to_background(fg), 1.0)
    if split_depth > 0:
        seeds, _ = ndi.label(h_maxima(dist, split_depth))
    else:
        seeds, _ = ndi.label(fg)
    labels = watershed(-dist, seeds, mask=fg)
    # a component that got no seed (flat or tiny) is still one object
    comp, n = ndi.label(fg & (labels == 0))
    if n:
        labels[comp > 0] = comp[comp > 0] + labels.max()
    return labels.astype(np.int32)


def distance_to_background(fg):
    """Euclidean distance of each pixel of ``fg`` (bool ``H x W``) to the nearest background pixel: float32.

    The same values as ``scipy.ndimage.distance_transform_edt(fg)`` cast to float32, 4x faster:
    OpenCV's exact transform, whose approximate float32 square root is redone in float64 from the
    integer squared distance it stands for.
    """
    fg = np.asarray(fg, bool)
    if fg.all() or fg.ndim != 2:  # no background: scipy's convention
        from scipy import ndimage as ndi
        return ndi.distance_transform_edt(fg).astype(np.float32)
    cv2 = quiet_cv2()
    d = cv2.distanceTransform(fg.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.sqrt(np.rint(np.square(d, dtype=np.float64))).astype(np.float32)


def h_maxima(image, h):
    """``skimage.morphology.h_maxima(image, h)`` (uint8 ``H x W``) for a float image >= 0 whose background is 0.

    skimage's arithmetic (``image - h`` less its float allowance, reconstructed by dilation
    under ``image``, the residue ``>= h``) with the reconstruction done another way: the
    geodesic dilation (a 3 x 3 maximum filter, then the minimum with ``image``) repeated until
    nothing changes -- the reconstruction's definition, whose values are maxima and minima of
    the image's own values, so the same numbers, pixel for pixel, as skimage's sorting-based
    reconstruction (tests/test_segment.py).  It starts from what the reconstruction is known to
    be at least everywhere: every pixel is joined to the highest seed by a path through pixels
    >= 0, so the result is >= ``min(max(seed), 0)``; from there a distance map of cells
    settles in a few tens of steps (about as many as a cell's radius) instead of the width of
    the background, several times faster than skimage's sort of every pixel (bench/bench_screen.py).
    Images with no 0 pixel, a negative one, or another dtype go to skimage whole.
    """
    from skimage.morphology import h_maxima as sk_h_maxima
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype not in (np.float32, np.float64) or float(image.min(initial=0)) != 0.0 \
            or image.all():
        return sk_h_maxima(image, h)
    if h > np.ptp(image):
        return np.zeros(image.shape, np.uint8)
    shifted = image - h - 2 * np.finfo(image.dtype).resolution * np.abs(image)  # skimage's allowance for rounding
    floor = image.dtype.type(min(float(shifted.max()), 0.0))
    reconstructed = reconstruct_by_dilation(np.maximum(shifted, floor), image)
    return ((image - reconstructed) >= h).astype(np.uint8)


SQUARE = np.ones((3, 3), np.uint8)
"""The 3 x 3 square: 8-connected neighbours."""
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
"""The 3 x 3 cross (``skimage.morphology.disk(1)``): 4-connected neighbours."""


def reconstruct_by_dilation(seed, mask, footprint=SQUARE, block=8):
    """Grey reconstruction by dilation of ``seed`` under ``mask`` (float32/64 ``H x W``) with ``footprint``
    (uint8 3 x 3: :data:`SQUARE`, 8-connected, or :data:`CROSS`, 4-connected): the geodesic dilation
    ``min(dilate(r), mask)`` repeated from ``r = min(seed, mask)`` until it stops changing (checked every
    ``block`` steps: the steps only raise values, so no change over a block is the end).

    The reconstruction is unique and its values are values of ``seed`` or ``mask``, so this is
    ``skimage.morphology.reconstruction(seed, mask, footprint=footprint)`` bit for bit
    (tests/test_cp_features.py); each step is one OpenCV dilation of the image, where scikit-image
    sorts every pixel (the CellProfiler features' Granularity: ``bench/bench_rf.py --against``).
    """
    cv2 = quiet_cv2()
    seed, mask = np.asarray(seed), np.asarray(mask)
    if seed.shape != mask.shape or seed.ndim != 2:
        raise ValueError(f"seed and mask must be the same 2-D shape, got {seed.shape} and {mask.shape}")
    rec = np.minimum(seed, mask)
    while True:
        before = rec
        for _ in range(block):
            rec = np.minimum(cv2.dilate(rec, footprint, borderType=cv2.BORDER_REPLICATE), mask)
        if np.array_equal(rec, before):
            return rec


def filter_cells(labels, min_area=150, max_area=3000, border_margin=1):
    """Drop objects outside ``[min_area, max_area]`` or within ``border_margin`` px of the edge.

    Returns ``(mask int32 with the kept objects relabelled 1..N in their
    order, counts dict: too_small, too_large, border)``.
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    area = np.bincount(labels.ravel(), minlength=n + 1)
    drop = np.zeros(n + 1, bool)
    drop[0] = True
    small = (area < min_area) & (area > 0)
    large = area > max_area
    edge = np.zeros(n + 1, bool)
    if border_margin > 0:
        m = int(border_margin)
        rim = np.concatenate([labels[:m].ravel(), labels[-m:].ravel(), labels[:, :m].ravel(), labels[:, -m:].ravel()])
        edge[np.unique(rim)] = True
    small[0] = large[0] = edge[0] = False
    drop |= small | large | edge
    present = area > 0
    keep = present & ~drop
    new = np.zeros(n + 1, np.int32)
    new[np.flatnonzero(keep)] = np.arange(1, int(keep.sum()) + 1)
    return new[labels], {"too_small": int((small & present).sum()), "too_large": int((large & ~small & present).sum()),
                         "border": int((edge & ~small & ~large & present).sum())}


def segment_marker(marker, params=SegmentParams(), return_info=False):
    """Segment cells in one marker-channel image.

    ``marker``: ``H x W`` (uint8, uint16 or float; only relative intensities
    matter).  Returns the label mask, int32 ``H x W`` (0 = background, cells
    1..N); with ``return_info`` also a dict (``threshold``, ``noise_sd``,
    ``n_objects`` before filtering, the filter counts).
    """
    corrected = correct_background(marker, params.background_radius, params.smooth_sigma)
    fg, level = foreground(corrected, params)
    labels = split_touching(fg, params.split_depth)
    mask, counts = filter_cells(labels, params.min_area, params.max_area, params.border_margin)
    if not return_info:
        return mask
    info = dict(threshold=level, noise_sd=noise_sd(corrected), n_objects=int(labels.max(initial=0)), **counts)
    return mask, info


def cells_and_crops(micrograph, mask=None, params=SegmentParams(), size=IMAGE_SIZE, border="pad"):
    """Micrograph (+ optional mask) -> cells and their crops, no labels needed.

    ``micrograph``: uint8 ``2 x H x W`` (channel 0 = marker, 1 = protein, as
    :func:`deepyeast.data.micrographs.read_micrograph` returns it); ``mask``: a label
    image of the same size, or None to segment the marker with ``params``.
    Returns ``(mask int H x W, cells, crops uint8 M x 2 x size x size)`` where
    ``cells`` is :func:`measure_cells`'s dict restricted to the M cropped cells
    (all of them with ``border="pad"``) plus ``padded`` (bool M).
    """
    micrograph = np.asarray(micrograph)
    if mask is None:
        mask = segment_marker(micrograph[0], params)
    elif np.shape(mask) != micrograph.shape[1:]:
        raise InputError(f"mask is {np.shape(mask)[1]}x{np.shape(mask)[0]} but the micrograph is "
                         f"{micrograph.shape[2]}x{micrograph.shape[1]}")
    cells = measure_cells(mask)
    crops, kept, padded = crop_cells(micrograph, np.stack([cells["y"], cells["x"]], 1), size, border)
    cells = {k: v[kept] for k, v in cells.items()}
    cells["padded"] = padded
    return mask, cells, crops


# --------------------------------------------------------------------------- scoring

def match_objects(true_mask, pred_mask, iou_threshold=0.5):
    """One-to-one matching of predicted to true objects at IoU >= ``iou_threshold``.

    Pairs are chosen to maximise the summed IoU (Hungarian assignment over the
    pairs above the threshold; above 0.5 each object has at most one candidate
    anyway).  Returns a dict: ``tp``, ``fp``, ``fn``, ``precision``,
    ``recall``, ``f1``, ``pairs`` (int N x 2: true id, predicted id), ``iou``
    (N) and ``centroid_error`` (N, pixels, between the matched objects'
    centroids).
    """
    from scipy.optimize import linear_sum_assignment
    t = np.asarray(true_mask).astype(np.int64)
    p = np.asarray(pred_mask).astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"masks differ in shape: {t.shape} vs {p.shape}")
    tc, pc = measure_cells(t), measure_cells(p)
    t_ids, p_ids = tc["cell"], pc["cell"]
    both = (t > 0) & (p > 0)
    pair, inter = np.unique(t[both] * (int(p.max(initial=0)) + 1) + p[both], return_counts=True)
    ti, pi = np.divmod(pair, int(p.max(initial=0)) + 1)
    t_area = dict(zip(t_ids, tc["area"]))
    p_area = dict(zip(p_ids, pc["area"]))
    union = np.array([t_area[a] + p_area[b] for a, b in zip(ti, pi)], float).reshape(-1) - inter
    iou = inter / union if len(pair) else np.zeros(0)
    ok = iou >= iou_threshold
    ti, pi, iou = ti[ok], pi[ok], iou[ok]
    if len(ti):
        tu, tinv = np.unique(ti, return_inverse=True)
        pu, pinv = np.unique(pi, return_inverse=True)
        cost = np.zeros((len(tu), len(pu)))
        cost[tinv, pinv] = -iou
        r, c = linear_sum_assignment(cost)
        sel = cost[r, c] < 0
        pairs = np.stack([tu[r[sel]], pu[c[sel]]], 1)
        pair_iou = -cost[r[sel], c[sel]]
    else:
        pairs, pair_iou = np.zeros((0, 2), np.int64), np.zeros(0)
    t_pos = {k: i for i, k in enumerate(t_ids)}
    p_pos = {k: i for i, k in enumerate(p_ids)}
    err = np.array([np.hypot(tc["x"][t_pos[a]] - pc["x"][p_pos[b]], tc["y"][t_pos[a]] - pc["y"][p_pos[b]])
                    for a, b in pairs], float)
    tp = len(pairs)
    fp, fn = len(p_ids) - tp, len(t_ids) - tp
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return dict(tp=tp, fp=fp, fn=fn, precision=precision, recall=recall, f1=f1, pairs=pairs, iou=pair_iou,
                centroid_error=err)


# --------------------------------------------------------------------------- whole screens

@dataclasses.dataclass(frozen=True)
class CellFinding:
    """How a screen's cells are read, found and cut: the micrograph files' format (``fmt``,
    :class:`deepyeast.data.micrographs.MicrographFormat`), the segmentation (``params``), whether a
    row's own mask is segmented anew (``resegment``), and the crops (``size`` pixels a side;
    ``border`` "pad" or "skip" for cells near the edge)."""

    params: SegmentParams = SegmentParams()
    fmt: MicrographFormat = MicrographFormat()
    resegment: bool = False
    size: int = IMAGE_SIZE
    border: str = "pad"

    def describe(self):
        """The settings as summaries hold them: the segmentation parameters, then ``channels``,
        ``bits``, ``resegment``."""
        return dict(dataclasses.asdict(self.params), **self.fmt.describe(), resegment=self.resegment)


def row_cells(rec, finding=CellFinding()):
    """Read one images-table row and find its cells.

    ``rec``: a row of :func:`deepyeast.data.screen_tables.read_images_table`.  Its micrograph
    is read with ``finding.fmt`` (:func:`deepyeast.data.micrographs.read_micrograph`);
    the row's ``mask`` is used when given (unless ``finding.resegment``), else the
    marker is segmented with ``finding.params``.  Returns ``(micrograph uint8 2 x H x W,
    mask int H x W, info dict)``; ``info["source"]`` is ``"given"`` or
    ``"segmented"`` (then with :func:`segment_marker`'s info).  Raises
    ``InputError`` naming the file for bad input.
    """
    micro = read_row_micrograph(rec, finding.fmt)
    if rec["mask"] is not None and not finding.resegment:
        return micro, read_mask(rec["mask"], micro.shape[1:], rec["path"]), {"source": "given"}
    mask, info = segment_marker(micro[0], finding.params, return_info=True)
    info["source"] = "segmented"
    return micro, mask, info


def iter_screen_cells(images_csv, finding=CellFinding(), class_names=CLASS_NAMES, on_bad=None, progress=True,
                      require=(), desc="cells"):
    """Cells and crops of every micrograph of an images table (read, found and cut as ``finding``
    says, :class:`CellFinding`), labels optional.

    ``images_csv``: the table of :func:`deepyeast.data.screen_tables.read_images_table`
    (``image`` or ``marker_image,protein_image``; ``plate``, ``protein``,
    ``label``, ``split``, ``mask`` optional, unless named in ``require``).
    Yields, per readable row in table order, ``(rec, mask, cells, crops)``:
    ``rec`` the row dict (``where``, ``path``, ``plate``, ``protein``,
    ``label`` (int or None), ..., and ``segmentation``: :func:`row_cells`'s
    info, ``source`` "given" or "segmented"), ``mask`` the label image (given
    or segmented), ``cells`` the dict of :func:`cells_and_crops` (``cell``,
    ``x``, ``y``, ``area``, ``padded``) and ``crops`` uint8
    ``M x 2 x size x size`` (M may be 0: no cell found).  Bad rows raise
    ``InputError`` naming table, line and file, or, given ``on_bad(where,
    err)``, are handed to it and skipped.  ``desc`` names the progress bar
    (one step per micrograph; the caller's work on a yielded row counts in it).
    """
    on_bad = Rejects() if on_bad is None else on_bad
    rows = read_images_table(images_csv, class_names, require=require, on_bad=on_bad)
    for rec in progress_report(rows, desc=desc, unit="image", enabled=None if progress else False):
        try:
            micro, mask, info = row_cells(rec, finding)
            _, cells, crops = cells_and_crops(micro, mask, size=finding.size, border=finding.border)
        except InputError as e:
            on_bad(rec["where"], e)
            continue
        rec["segmentation"] = info
        yield rec, mask, cells, crops


def _mask_name(rec, base, used):
    rel = os.path.relpath(rec["path"], base)
    stem = os.path.splitext(rel)[0]
    if stem.lower().endswith(".ome"):
        stem = stem[:-4]
    if rel.startswith("..") or os.path.isabs(rel):
        stem = os.path.basename(stem)
    name = os.path.join("masks", stem + ".png")
    if name in used:
        name = os.path.join("masks", f"row{rec['number']}_{os.path.basename(stem)}.png")
    used.add(name)
    return name


def write_mask(path, mask):
    """Write a label mask as a 16-bit single-channel PNG (the format cellpose and CellProfiler read)."""
    mask = np.asarray(mask)
    if int(mask.max(initial=0)) > 65535:
        raise InputError(f"{path}: {int(mask.max())} cells do not fit a 16-bit label image")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, data = quiet_cv2().imencode(".png", mask.astype(np.uint16))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with open(path, "wb") as f:
        f.write(data.tobytes())


def segment_screen(images_csv, out_dir, finding=CellFinding(), skip_bad=False, class_names=CLASS_NAMES, progress=True):
    """Segment every micrograph of an images table (read and segmented as ``finding`` says,
    :class:`CellFinding`; its crop size and border play no part here); returns a summary dict.

    ``images_csv``: the table of :func:`deepyeast.data.screen_tables.read_images_table`
    (``image`` or ``marker_image,protein_image``; ``plate``, ``protein``,
    ``label``, ``split`` optional here and passed through).  A row that already
    names a ``mask`` keeps it (external segmentations: CellProfiler, cellpose,
    YeaZ...) unless ``finding.resegment``.  Writes, atomically, ``out_dir/``:

    * ``masks/<image path>.png``: 16-bit label masks (0 = background);
    * ``images.csv``: the input table (paths rewritten relative to
      ``out_dir``) with ``mask`` and ``n_cells`` -- the input of
      ``data_prep/crop_cells.py`` and of the classification step;
    * ``cells.csv``: ``image,plate,protein,cell,x,y,area`` (+ ``label,class``
      where the table has labels), x/y the centroid in pixels, also usable as
      a centres table;
    * ``segmentation.csv``: per image ``source`` (segmented/given),
      ``n_cells``, ``threshold``, ``noise_sd``, ``n_objects`` and the objects
      dropped by the filters (``too_small``, ``too_large``, ``border``);
    * ``params.json``; ``rejects.txt`` (``where<TAB>reason``) when rows were skipped.

    Bad input (unreadable file, single-channel, 16-bit without ``bits``,
    channels of different sizes, a mask of the wrong size) raises
    ``InputError`` naming file and row, or with ``skip_bad`` is listed in
    ``rejects.txt``.  A micrograph without cells is kept (``n_cells`` 0),
    logged and listed in the summary's ``images_without_cells``.
    """
    import json
    bad = rejects = Rejects(skip_bad)

    base = os.path.dirname(os.path.abspath(images_csv))
    out_abs = os.path.abspath(out_dir)
    rows = read_images_table(images_csv, class_names, require=(), on_bad=bad)
    with open_input(images_csv, "images table", newline="") as f:
        header = next(csv.reader(f), [])
    for col in ("mask", "n_cells"):
        if col not in header:
            header.append(col)
    has_labels = any(r["label"] is not None for r in rows)
    img_rows, cell_rows, seg_rows, empty, used = [], [], [], [], set()
    with atomic_folder(out_dir) as tmp:
        for rec in progress_report(rows, desc="segment", unit="image", enabled=None if progress else False):
            try:
                micro, mask, info = row_cells(rec, finding)
                if info["source"] == "given":
                    mask_rel = os.path.relpath(rec["mask"], out_abs)
                else:
                    mask_rel = _mask_name(rec, base, used)
                    write_mask(os.path.join(tmp, mask_rel), mask)
            except InputError as e:
                bad(rec["where"], e)
                continue
            cells = measure_cells(mask)
            n = len(cells["cell"])
            if n == 0:
                empty.append(rec["where"])
                log.warning("%s: no cell found in %s", rec["where"], rec["path"])
            fields = dict(rec["fields"])
            for col in ("image", "marker_image", "protein_image"):
                if (fields.get(col) or "").strip():
                    fields[col] = os.path.relpath(os.path.join(base, fields[col].strip()), out_abs)
            fields["mask"], fields["n_cells"] = mask_rel, n
            img_rows.append([fields.get(c, "") for c in header])
            image_ref = fields["image"] if (fields.get("image") or "").strip() else fields["marker_image"]
            extra = [rec["label"], class_names[rec["label"]]] if rec["label"] is not None else ["", ""]
            for i in range(n):
                cell_rows.append([image_ref, "" if rec["plate"] is None else rec["plate"], rec["protein"] or "",
                                  int(cells["cell"][i]), f"{cells['x'][i]:.2f}", f"{cells['y'][i]:.2f}",
                                  int(cells["area"][i])] + (extra if has_labels else []))
            seg_rows.append([image_ref, info["source"], n] + [
                (f"{info[k]:.3f}" if isinstance(info.get(k), float) else info.get(k, ""))
                for k in ("threshold", "noise_sd", "n_objects", "too_small", "too_large", "border")])
        write_csv(os.path.join(tmp, "images.csv"), img_rows, header)
        write_csv(os.path.join(tmp, "cells.csv"), cell_rows,
                  ["image", "plate", "protein", "cell", "x", "y", "area"] + (["label", "class"] if has_labels else []))
        write_csv(os.path.join(tmp, "segmentation.csv"), seg_rows,
                  ["image", "source", "n_cells", "threshold", "noise_sd", "n_objects", "too_small", "too_large",
                   "border"])
        atomic_write_text(os.path.join(tmp, "params.json"), json.dumps(finding.describe(), indent=1) + "\n")
        rejects.write(tmp)
    counts = collections.Counter(r[1] for r in seg_rows)
    return {"n_images": len(img_rows), "n_segmented": counts["segmented"], "n_given_masks": counts["given"],
            "n_cells": len(cell_rows), "n_rejected": len(rejects.items), "images_without_cells": empty}
