"""Classify a new screen: micrographs -> cells -> per-cell and per-protein localisation calls.

A lab's screen arrives as micrographs (marker + GFP channel) of strains, without labels or
segmentation.  :func:`classify_screen` takes an images table (the table of
:func:`deepyeast.data.screen_tables.read_images_table`; ``label`` optional) and a model bundle
folder (:mod:`deepyeast.model.bundle`) and

1. finds the cells of each micrograph (:func:`deepyeast.data.segment_cells.iter_screen_cells`: the
   row's ``mask`` when given, else the marker channel is segmented), cuts a crop of the
   bundle's input size centred on each cell;
2. runs the bundle's network on every crop (our engine; ``precision`` fp32 = Caffe's
   arithmetic, or bf16 convolutions on the folded deploy net of
   :func:`deepyeast.engine.fold.deploy_net`; ``compare_fp32`` also runs fp32 and counts
   the calls that change);
3. calls each protein with the paper's Dirichlet model
   (:func:`deepyeast.analysis.protein_level.dirichlet_map`: uniform prior, the cells'
   probabilities as soft counts, MAP proportions ``post_k``) and flags calls to check;
4. writes, as one folder that appears all at once, ``cells.csv``, ``proteins.csv``,
   ``images.csv``, ``summary.json``, ``report.html`` (with ``gallery/`` and ``figures/``) and,
   when rows were skipped, ``rejects.txt``.

A *protein* is a (plate, protein) pair of the images table, as the archive's
``plateNN/<protein>``: its cells are those of every micrograph of that pair.

Flags of a protein call (columns of ``proteins.csv``)
-----------------------------------------------------
``few_cells``
    fewer than ``min_cells`` cells (default 10, the paper's threshold for its 222-protein
    subset, where it reached 100%).
``low_confidence``
    the posterior probability that the called compartment's share exceeds the runner-up's,
    ``p_call`` = P(theta_top1 > theta_top2 | cells), is below ``confidence`` (default 0.95).
    Under the Dirichlet posterior ``Dir(alpha)``, ``theta_1 / (theta_1 + theta_2)`` is
    ``Beta(alpha_1, alpha_2)`` whatever the other shares, so ``p_call`` =
    ``1 - I_0.5(alpha_1, alpha_2)`` exactly (``I`` the regularised incomplete beta function).
    It is low when the two leading compartments hold similar soft counts, and when there are
    too few cells to tell them apart (3 cells all called with certainty: 1 - 0.5^4 = 0.94).
``possible_dual``
    the runner-up compartment's share ``top2_share`` is at least ``dual_share`` (default
    0.25): a quarter of the protein's soft counts or more point to a second compartment, as
    for a protein split between nucleus and cytoplasm (the paper checks such mixed proteins
    by their top two compartments).  A network that confuses two compartments raises it too;
    the gallery shows which.
``no_cells``
    no cell was found in any micrograph of the protein (no call).

Where the table gives labels, the per-cell accuracy (with a stratified-bootstrap interval and
Cohen's kappa, as :mod:`deepyeast.analysis.evaluate_cells`) and the per-protein accuracy (all
proteins, and those with at least ``min_cells`` cells) are computed as in the main report.
"""

import collections
import dataclasses
import json
import logging
import os
import shutil
import time

import numpy as np

from deepyeast.analysis.ood import OOD_FLAG
from deepyeast.analysis.qc import QC_COLUMNS
from deepyeast.constants import INFERENCE_PRECISIONS as PRECISIONS, MIN_CELLS_PER_PROTEIN
from deepyeast.data.screen_tables import Rejects, read_images_table
from deepyeast.data.segment_cells import CellFinding, SegmentParams
from deepyeast.engine.inference import InferenceSettings
from deepyeast.utils.run_context import RunContext
from deepyeast.utils.io import (InputError, StepFailed, atomic_path, atomic_write_text, check_replaceable,
                                output_lock, remove_stale_partials, write_csv)

log = logging.getLogger(__name__)

__all__ = ["ScreenCells", "ScreenCalls", "CallRules", "classify_screen", "classify_micrograph", "micrograph_predictor",
           "read_screen_rows",
           "assemble_cells",
           "call_proteins", "protein_flags", "p_call", "DUAL_SHARE", "CONFIDENCE", "GALLERY_CELLS", "PRECISIONS"]

DUAL_SHARE = 0.25
"""Default ``possible_dual`` threshold on the runner-up compartment's posterior share."""
CONFIDENCE = 0.95
"""Default ``low_confidence`` threshold on ``p_call`` (posterior probability that the call leads the runner-up)."""
GALLERY_CELLS = 8
"""Default number of cells shown per protein in the report."""


@dataclasses.dataclass(frozen=True)
class CallRules:
    """When a protein call is flagged (see the module doc): ``few_cells`` below ``min_cells`` cells,
    ``low_confidence`` for ``p_call`` below ``confidence``, ``possible_dual`` for a runner-up share of at
    least ``dual_share``.  Invalid values are an ``InputError``."""

    min_cells: int = MIN_CELLS_PER_PROTEIN
    confidence: float = CONFIDENCE
    dual_share: float = DUAL_SHARE

    def __post_init__(self):
        if not 0 < self.dual_share <= 1 or not 0 < self.confidence < 1:
            raise InputError(f"dual_share must be in (0, 1] and confidence in (0, 1), got {self.dual_share}, "
                             f"{self.confidence}")
        if self.min_cells < 1:
            raise InputError("min_cells and gallery_cells must be at least 1")

    def definitions(self):
        """The flags' definitions in words, with these thresholds (``summary.json``'s ``flag_definitions``)."""
        return {
            "few_cells": f"fewer than {self.min_cells} cells",
            "low_confidence": f"p_call < {self.confidence}: the posterior probability that the called "
                              "compartment's share exceeds the runner-up's (Dirichlet posterior, exact)",
            "possible_dual": f"top2_share >= {self.dual_share}: the runner-up compartment holds at least "
                             "that share of the protein's soft counts",
            "no_cells": "no cell found in any of the protein's micrographs (no call)"}


# --------------------------------------------------------------------------- cells

@dataclasses.dataclass
class ScreenCells:
    """The cells of a screen with the network's calls (N cells, K classes), in table order.

    image, protein : object arrays of str (N,); plate : int64 (N,), -1 where the table has none;
    key : object (N,) protein identity (``plateNN/<protein>``, or the protein without a plate);
    cell : int64 (N,) label in the mask; x, y : float64 (N,) centroid, pixels (x = column);
    area : int64 (N,) pixels; padded : bool (N,) crop reached past the image edge (zero-padded);
    label : int64 (N,), -1 where the row has none; probs : float32 (N, K); pred : int64 (N,);
    probs_fp32 : float32 (N, K) or None (``compare_fp32``);
    crops_path : str, raw uint8 N x C x S x S crops on disk (:meth:`read_crops`);
    images : list of dicts, one per readable micrograph (where, image, plate, protein, key,
    label, source, n_cells, first (index of its first cell), qc (:mod:`deepyeast.analysis.qc`));
    ood_score : float32 (N,) out-of-distribution score (NaN where the bundle has no statistics);
    ood : bool (N,) flagged out of distribution (left out of the protein calls);
    well : object (N,) str, the micrograph's well ("" where the input names none).
    """

    image: np.ndarray
    protein: np.ndarray
    plate: np.ndarray
    key: np.ndarray
    cell: np.ndarray
    x: np.ndarray
    y: np.ndarray
    area: np.ndarray
    padded: np.ndarray
    label: np.ndarray
    probs: np.ndarray
    pred: np.ndarray
    probs_fp32: object
    crops_path: str
    crop_shape: tuple
    images: list
    ood_score: np.ndarray = None
    ood: np.ndarray = None
    well: np.ndarray = None

    def __post_init__(self):
        if self.well is None:
            self.well = np.full(self.n_cells, "", object)
        if self.ood_score is None:
            self.ood_score = np.full(self.n_cells, np.nan, np.float32)
        if self.ood is None:
            self.ood = np.zeros(self.n_cells, bool)

    @property
    def n_cells(self):
        return int(self.cell.shape[0])

    def read_crops(self, index):
        """uint8 len(index) x C x S x S: the crops of the cells ``index`` (ints in [0, N)), read from
        ``crops_path`` by position.

        Read, not memory-mapped: the report shows a few cells of every protein, spread over the
        whole file, and the pages of a map it touched would stay in the process's resident set,
        which would then grow with the screen (8 KiB per cell of 2 x 64 x 64).
        """
        index = np.asarray(index, np.int64).reshape(-1)
        shape = tuple(self.crop_shape)
        size = int(np.prod(shape))
        out = np.empty((len(index),) + shape, np.uint8)
        if len(index) and (index.min() < 0 or index.max() >= self.n_cells):
            raise IndexError(f"cell index out of range 0..{self.n_cells - 1}")
        if len(index):
            with open(self.crops_path, "rb", buffering=0) as f:
                for j, i in enumerate(index):
                    buf = os.pread(f.fileno(), size, int(i) * size)
                    if len(buf) != size:
                        raise StepFailed(f"{self.crops_path}: ends before cell {int(i)}; run again")
                    out[j] = np.frombuffer(buf, np.uint8).reshape(shape)
        return out


def protein_key(plate, protein):
    """The protein identity of an images-table row: ``plateNN/<protein>`` (the archive's), or the protein alone."""
    return protein if plate is None else f"plate{plate:02d}/{protein}"


def read_screen_rows(images_csv, class_names, rejects):
    """The rows of an images table for classifying (``protein`` required), each with ``position``.

    ``images_csv``: the table's path, or a :class:`deepyeast.data.screen_folder.ImageFolder` (a folder
    of micrographs named by a pattern) or :class:`deepyeast.data.omezarr.ZarrPlate` (every field of a
    plate) whose rows stand for the table's.

    The same micrograph (the same ``image``, or the same ``marker_image`` + ``protein_image``
    pair) on two rows would count its cells twice: the later row is bad input naming both rows
    (``rejects`` raises it, or with ``--skip-bad`` lists it and leaves it out).  A protein given
    two labels is an ``InputError`` naming both rows, before any micrograph is read.
    """
    if hasattr(images_csv, "rows"):  # ImageFolder, ZarrPlate
        rows = images_csv.rows(rejects)
    else:
        rows = read_images_table(images_csv, class_names, require=("protein",), on_bad=rejects)
    seen, labels, out = {}, {}, []
    for rec in rows:
        key = (rec["path"], rec["protein_path"])
        if key in seen:
            rejects(rec["where"], InputError(f"{rec['where']}: {rec['image']} is the micrograph of {seen[key]} "
                                             "again; each micrograph may appear once (its cells would count twice)"))
            continue
        protein = protein_key(rec["plate"], rec["protein"])
        if rec["label"] is not None:
            if protein in labels and labels[protein][0] != rec["label"]:
                raise InputError(f"{rec['where']}: protein {protein} has label {rec['label']} here but "
                                 f"{labels[protein][0]} on {labels[protein][1]}")
            labels[protein] = (rec["label"], rec["where"])
        seen[key] = rec["where"]
        rec["position"] = len(out)
        out.append(rec)
    return out


def assemble_cells(rows, chunks, work, fp, settings, bundle, crops_path, rejects):
    """:class:`ScreenCells` from the chunk files of a finished run (table order); crops streamed to
    ``crops_path``.  Bad rows go to ``rejects`` (raised without ``--skip-bad``)."""
    from deepyeast.analysis.screen_run import chunk_path, read_chunk, row_stamp

    c, h, w = bundle.input_shape
    want32 = settings.compare_fp32 and settings.inference.precision != "fp32"
    cols = collections.defaultdict(list)
    images = []
    n = 0
    with open(crops_path, "wb") as raw:
        for index, recs in chunks:
            data = read_chunk(chunk_path(work, index), fp, [r["position"] for r in recs],
                              [row_stamp(r) for r in recs], want32)
            if data is None:
                raise StepFailed(f"{chunk_path(work, index)}: chunk file changed during the run; run again")
            counts = np.bincount(data["row"], minlength=len(recs))
            first = np.concatenate([[0], np.cumsum(counts)])
            for j, rec in enumerate(recs):
                if not data["ok"][j]:
                    rejects(rec["where"], InputError(str(data["reason"][j])))
                    continue
                m = int(counts[j])
                key = protein_key(rec["plate"], rec["protein"])
                qc = {name: float(v) for name, v in zip(QC_COLUMNS, data["qc"][j])}
                images.append(dict(where=rec["where"], image=rec["image"], plate=rec["plate"], well=rec.get("well"),
                                   protein=rec["protein"], key=key, label=rec["label"], source=str(data["source"][j]),
                                   n_cells=m, first=n, qc=qc))
                if m == 0:
                    log.warning("%s: no cell found in %s", rec["where"], rec["path"])
                    continue
                sl = slice(int(first[j]), int(first[j + 1]))
                raw.write(np.ascontiguousarray(data["crops"][sl]).tobytes())
                cols["image"] += [rec["image"]] * m
                cols["protein"] += [rec["protein"]] * m
                cols["plate"] += [-1 if rec["plate"] is None else rec["plate"]] * m
                cols["well"] += [rec.get("well") or ""] * m
                cols["key"] += [key] * m
                cols["label"] += [-1 if rec["label"] is None else rec["label"]] * m
                for name in ("cell", "x", "y", "area", "padded", "probs", "ood_score") + (("probs_fp32",) if want32
                                                                                          else ()):
                    cols[name].append(data[name][sl])
                n += m
    k = len(bundle.classes)

    def cat(name, dtype, shape=()):
        return np.concatenate(cols[name]).astype(dtype) if cols[name] else np.zeros((0,) + shape, dtype)

    probs = cat("probs", np.float32, (k,))
    return ScreenCells(
        image=np.asarray(cols["image"], object), protein=np.asarray(cols["protein"], object),
        plate=np.asarray(cols["plate"], np.int64), key=np.asarray(cols["key"], object),
        cell=cat("cell", np.int64), x=cat("x", np.float64), y=cat("y", np.float64), area=cat("area", np.int64),
        padded=cat("padded", bool), label=np.asarray(cols["label"], np.int64), probs=probs,
        pred=probs.argmax(axis=1).astype(np.int64) if len(probs) else np.zeros(0, np.int64),
        probs_fp32=cat("probs_fp32", np.float32, (k,)) if want32 else None,
        crops_path=crops_path, crop_shape=(c, h, w), images=images, ood_score=cat("ood_score", np.float32),
        well=np.asarray(cols["well"], object))


def _crop_shape(bundle):
    """The bundle's crop shape ``(2, S, S)``; InputError when its net does not take 2-channel square crops."""
    c, h, w = bundle.input_shape
    if c != 2 or h != w:
        raise InputError(f"{bundle.path}: the model takes {c} x {h} x {w} inputs; classifying micrographs needs "
                         "2-channel square crops (marker, protein)")
    return c, h, w


def micrograph_predictor(bundle):
    """``(predictor, scorer)`` for :func:`classify_micrograph`: the bundle's fp32 CPU predictor, keeping the
    blob its out-of-distribution scorer reads, and the scorer (:class:`deepyeast.analysis.ood.OodScorer`,
    None when the bundle has no statistics)."""
    from deepyeast.analysis.ood import OodScorer

    scorer = OodScorer.from_bundle(bundle)
    return bundle.predictor(extra_blobs=(scorer.blob,) if scorer is not None else ()), scorer


def classify_micrograph(bundle, micrograph, mask=None, params=SegmentParams(), border="pad", predictor=None,
                        name="micrograph"):
    """One micrograph in memory -> its cells and the call of its protein, as :func:`classify_screen` makes them.

    ``bundle``: a :class:`deepyeast.model.Bundle`; ``micrograph``: uint8 ``2 x H x W`` (marker,
    protein: :func:`deepyeast.data.micrographs.to_two_channel`); ``mask``: an int label image of
    the same size, or None to segment the marker with ``params``; ``border`` as ``classify_screen``;
    ``predictor``: :func:`micrograph_predictor`'s pair to reuse (else it is built); ``name`` names
    the micrograph and its protein.  Returns ``(mask int H x W, cells ScreenCells, calls ScreenCalls)``:
    ``cells.cell`` are the mask's labels, ``cells.ood_score``/``cells.ood`` as ``classify_screen``'s
    (NaN / 0 when the bundle has no statistics; flagged cells are left out of the call), ``calls`` one
    protein (the default call rules).  Used by the napari plugin.
    """
    from deepyeast.data.segment_cells import cells_and_crops

    c, h, w = _crop_shape(bundle)
    source = "segmented" if mask is None else "given"
    micrograph = np.asarray(micrograph)
    if micrograph.ndim != 3 or micrograph.shape[0] != 2 or micrograph.dtype != np.uint8:
        raise InputError(f"{name}: expected uint8 2 x H x W (marker, protein), got {micrograph.dtype} "
                         f"{' x '.join(map(str, micrograph.shape))}")
    mask, found, crops = cells_and_crops(micrograph, mask, params, size=h, border=border)
    predictor, scorer = predictor or micrograph_predictor(bundle)
    m = len(crops)
    out = predictor.outputs(crops) if m else {}
    probs = out[bundle.output_blob].astype(np.float32) if m else np.zeros((0, len(bundle.classes)), np.float32)
    ood_score = scorer.score(out[scorer.blob], crops) if m and scorer is not None else None
    image = dict(where=name, image=name, plate=None, protein=name, key=name, label=None,
                 source=source, n_cells=m, first=0)
    cells = ScreenCells(
        image=np.asarray([name] * m, object), protein=np.asarray([name] * m, object), plate=np.full(m, -1, np.int64),
        key=np.asarray([name] * m, object), cell=np.asarray(found["cell"], np.int64),
        x=np.asarray(found["x"], np.float64), y=np.asarray(found["y"], np.float64),
        area=np.asarray(found["area"], np.int64), padded=np.asarray(found["padded"], bool),
        label=np.full(m, -1, np.int64), probs=probs, pred=probs.argmax(axis=1).astype(np.int64),
        probs_fp32=None, crops_path=None, crop_shape=(c, h, w), images=[image], ood_score=ood_score)
    if scorer is not None:
        cells.ood = cells.ood_score > OOD_FLAG
    return mask, cells, call_proteins(cells, bundle.classes)


# --------------------------------------------------------------------------- proteins

def p_call(alpha_top1, alpha_top2):
    """P(theta_top1 > theta_top2) under a Dirichlet posterior with these two concentrations.

    ``theta_1 / (theta_1 + theta_2) ~ Beta(alpha_1, alpha_2)``, so this is
    ``P(Beta > 1/2) = I_{1/2}(alpha_2, alpha_1)`` (array in, array out).
    """
    from scipy.special import betainc

    return betainc(np.asarray(alpha_top2, float), np.asarray(alpha_top1, float), 0.5)


def protein_flags(n_cells, posterior, alpha, rules=CallRules()):
    """Top two compartments and the flags of protein calls (see the module doc).

    ``n_cells`` int (P,), ``posterior`` float (P, K) MAP shares, ``alpha`` float (P, K)
    concentrations.  Returns a dict of (P,) arrays: ``top1``, ``top2`` (int), ``top1_share``,
    ``top2_share``, ``p_call`` (float), ``few_cells``, ``low_confidence``, ``possible_dual`` (bool).
    """
    posterior = np.asarray(posterior, float)
    alpha = np.asarray(alpha, float)
    order = np.argsort(-posterior, axis=1, kind="stable")
    rows = np.arange(posterior.shape[0])
    top1, top2 = order[:, 0], order[:, 1]
    p = p_call(alpha[rows, top1], alpha[rows, top2])
    return {"top1": top1, "top2": top2, "top1_share": posterior[rows, top1], "top2_share": posterior[rows, top2],
            "p_call": p, "few_cells": np.asarray(n_cells) < rules.min_cells, "low_confidence": p < rules.confidence,
            "possible_dual": posterior[rows, top2] >= rules.dual_share}


@dataclasses.dataclass
class ScreenCalls:
    """Protein calls of a screen (P proteins in table order of first appearance): protein_level's
    calls (:func:`deepyeast.analysis.protein_level.call_cells`) extended with what a screen adds.

    calls : :class:`deepyeast.analysis.protein_level.ProteinCalls` whose ``protein`` is the key
    (``plateNN/<protein>``, or the protein without a plate); through it ``key``, ``n_cells``
    int64 (P,), ``label`` int64 (P,) -1 unknown, ``pred`` int64 (P,) -1 without cells, ``alpha``,
    ``posterior`` float64 (P, K) (NaN without cells);
    plate (int, -1 none), protein (the name as the table gives it) : (P,); n_images : int64 (P,);
    flags : dict of :func:`protein_flags` arrays (+ ``no_cells``); n_ood : int64 (P,) cells flagged out of
    distribution, left out of the call (``n_cells`` counts the cells used);
    pred_fp32 : int64 (P,) or None (the calls from fp32 probabilities, with ``compare_fp32``);
    well : object (P,) str, the protein's well(s) in table order, ``;``-joined ("" where none is named).
    """

    calls: object
    plate: np.ndarray
    protein: np.ndarray
    n_images: np.ndarray
    flags: dict
    pred_fp32: object = None
    n_ood: np.ndarray = None
    well: np.ndarray = None

    key = property(lambda self: self.calls.protein)
    n_cells = property(lambda self: self.calls.n_cells)
    label = property(lambda self: self.calls.label)
    pred = property(lambda self: self.calls.pred)
    alpha = property(lambda self: self.calls.alpha)
    posterior = property(lambda self: self.calls.posterior)


def call_proteins(cells, class_names, rules=CallRules()):
    """Calls (:func:`deepyeast.analysis.protein_level.call_cells`) and flags of every protein of ``cells``.

    ``class_names``: the model's classes (or their number); ``rules``: :class:`CallRules`.  Cells flagged
    out of distribution (``cells.ood``) are left out of the calls and counted (``n_ood``).  Every
    protein with a readable micrograph is listed, those without cells too.  A protein whose rows give different labels
    is an ``InputError`` naming both rows.
    """
    from deepyeast.analysis.protein_level import call_cells

    if isinstance(class_names, (int, np.integer)):
        class_names = tuple(str(k) for k in range(class_names))
    order, info = [], {}
    for im in cells.images:
        if im["key"] not in info:
            order.append(im["key"])
            info[im["key"]] = dict(plate=im["plate"], protein=im["protein"], n_images=0, label=None, where=None,
                                   wells=[])
        p = info[im["key"]]
        p["n_images"] += 1
        if im.get("well") and im["well"] not in p["wells"]:
            p["wells"].append(im["well"])
        if im["label"] is not None:
            if p["label"] is not None and p["label"] != im["label"]:
                raise InputError(f"{im['where']}: protein {im['key']} has label {im['label']} here but "
                                 f"{p['label']} on {p['where']}")
            p["label"], p["where"] = im["label"], im["where"]
    labels = [-1 if info[k]["label"] is None else info[k]["label"] for k in order]
    keep = ~np.asarray(cells.ood, bool)
    index = {key: i for i, key in enumerate(order)}
    n_ood = np.bincount(np.asarray([index[k] for k in cells.key[~keep]], np.int64),
                        minlength=len(order)).astype(np.int64)
    calls = call_cells(cells.probs[keep], cells.key[keep], class_names, order=order, labels=labels)
    n_cells, has = calls.n_cells, calls.n_cells > 0
    flags = {name: np.zeros(len(order), dt) for name, dt in (
        ("top1", np.int64), ("top2", np.int64), ("top1_share", float), ("top2_share", float), ("p_call", float),
        ("few_cells", bool), ("low_confidence", bool), ("possible_dual", bool))}
    flags["top1"][:] = flags["top2"][:] = -1
    flags["top1_share"][:] = flags["top2_share"][:] = flags["p_call"][:] = np.nan
    if has.any():
        f = protein_flags(n_cells[has], calls.posterior[has], calls.alpha[has], rules)
        for name, values in f.items():
            flags[name][has] = values
    flags["few_cells"] = n_cells < rules.min_cells
    flags["no_cells"] = ~has
    pred_fp32 = None
    if cells.probs_fp32 is not None:
        pred_fp32 = call_cells(cells.probs_fp32[keep], cells.key[keep], class_names, order=order).pred
    return ScreenCalls(
        calls=calls, plate=np.asarray([-1 if info[k]["plate"] is None else info[k]["plate"] for k in order], np.int64),
        protein=np.asarray([info[k]["protein"] for k in order], object),
        n_images=np.asarray([info[k]["n_images"] for k in order], np.int64), flags=flags, pred_fp32=pred_fp32,
        n_ood=n_ood, well=np.asarray([";".join(info[k]["wells"]) for k in order], object))


# --------------------------------------------------------------------------- accuracy (labels given)

def accuracies(cells, calls, n_classes, min_cells=MIN_CELLS_PER_PROTEIN, n_resamples=2000, seed=0):
    """Per-cell and per-protein accuracy where labels are given (None when no row has a label).

    As in the main report: per cell a count with a stratified-bootstrap 95% interval
    (:func:`deepyeast.analysis.evaluate_cells.bootstrap_precision_recall`) and Cohen's kappa;
    per protein the MAP call against the label, over all labelled proteins with cells and
    over those with at least ``min_cells`` cells.
    """
    from deepyeast.analysis.evaluate_cells import bootstrap_precision_recall, cohen_kappa, count

    lab = cells.label >= 0
    if not lab.any():
        return None
    labels, preds = cells.label[lab], cells.pred[lab]
    boot = bootstrap_precision_recall(labels, preds, n_classes, n_resamples, seed)
    cell = count(np.sum(labels == preds), labels.size)
    cell["lo"], cell["hi"] = boot["accuracy_lo"], boot["accuracy_hi"]
    known = (calls.label >= 0) & (calls.n_cells > 0)
    big = known & (calls.n_cells >= min_cells)
    right = calls.pred == calls.label
    per_class = [{"class": k, "cells": int(np.sum(labels == k)), "right": int(np.sum((labels == k) & (preds == k))),
                  "proteins": int(np.sum(known & (calls.label == k))),
                  "proteins_right": int(np.sum(known & (calls.label == k) & right))} for k in range(n_classes)]
    return {"cell_accuracy": cell, "cell_kappa": cohen_kappa(labels, preds, n_classes),
            "protein_accuracy": count(np.sum(right & known), np.sum(known)),
            "protein_accuracy_min10": count(np.sum(right & big), np.sum(big)), "min_cells": int(min_cells),
            "labelled_cells": int(lab.sum()), "unlabelled_cells": int((~lab).sum()),
            "labelled_proteins_without_cells": int(np.sum((calls.label >= 0) & (calls.n_cells == 0))),
            "per_class": per_class, "n_resamples": int(n_resamples), "seed": int(seed)}


# --------------------------------------------------------------------------- tables

def _fmt(v, digits=6):
    return "" if v is None or np.isnan(float(v)) else f"{float(v):.{digits}g}"


def write_cells_table(path, cells, classes):
    """``cells.csv``: image,plate,well,protein,cell,x,y,area,padded,pred,class,prob_0..prob_{K-1},ood_score,ood
    [,label,true_class] (``ood_score`` empty where the bundle has no out-of-distribution statistics)."""
    k = len(classes)
    labelled = bool((cells.label >= 0).any())
    header = ["image", "plate", "well", "protein", "cell", "x", "y", "area", "padded", "pred", "class"] + \
        [f"prob_{j}" for j in range(k)] + ["ood_score", "ood"] + (["label", "true_class"] if labelled else [])

    def rows():
        for i in range(cells.n_cells):
            row = [cells.image[i], "" if cells.plate[i] < 0 else int(cells.plate[i]), cells.well[i], cells.protein[i],
                   int(cells.cell[i]), f"{cells.x[i]:.2f}", f"{cells.y[i]:.2f}", int(cells.area[i]),
                   int(cells.padded[i]), int(cells.pred[i]), classes[cells.pred[i]]] + \
                [f"{p:.6g}" for p in cells.probs[i]] + [_fmt(cells.ood_score[i]), int(cells.ood[i])]
            if labelled:
                lab = int(cells.label[i])
                row += ["", ""] if lab < 0 else [lab, classes[lab]]
            yield row
    write_csv(path, rows(), header)


PROTEIN_COLUMNS = ("plate", "well", "protein", "n_images", "n_cells", "n_ood", "pred", "class", "top1", "top1_share", "top2",
                   "top2_share", "p_call", "few_cells", "low_confidence", "possible_dual", "no_cells")


def write_proteins_table(path, calls, classes):
    """``proteins.csv``: one row per protein (see :data:`PROTEIN_COLUMNS`, then ``post_0..post_{K-1}``, and
    ``label,true_class,correct`` where labels are given)."""
    k = len(classes)
    labelled = bool((calls.label >= 0).any())
    header = list(PROTEIN_COLUMNS) + [f"post_{j}" for j in range(k)] + \
        (["label", "true_class", "correct"] if labelled else [])
    f = calls.flags

    def name(j):
        return "" if j < 0 else classes[j]

    def rows():
        for i in range(len(calls.key)):
            has = calls.n_cells[i] > 0
            row = ["" if calls.plate[i] < 0 else int(calls.plate[i]), calls.well[i], calls.protein[i],
                   int(calls.n_images[i]),
                   int(calls.n_cells[i]), int(calls.n_ood[i]), int(calls.pred[i]) if has else "", name(calls.pred[i]),
                   name(f["top1"][i]), _fmt(f["top1_share"][i]), name(f["top2"][i]), _fmt(f["top2_share"][i]),
                   _fmt(f["p_call"][i]), int(f["few_cells"][i]), int(f["low_confidence"][i]),
                   int(f["possible_dual"][i]), int(f["no_cells"][i])] + [_fmt(v, 9) for v in calls.posterior[i]]
            if labelled:
                lab = int(calls.label[i])
                row += ["", "", ""] if lab < 0 else [lab, classes[lab], int(calls.pred[i] == lab) if has else ""]
            yield row
    write_csv(path, rows(), header)


def write_images_table(path, cells):
    """``images.csv``: image,plate,well,protein,mask (given | segmented),n_cells, the QC measures
    (:data:`deepyeast.analysis.qc.QC_COLUMNS` after ``n_cells``), ``qc_flags`` (the measures that flag the
    micrograph, ``;``-joined: :func:`deepyeast.analysis.qc.qc_flags`) and ``n_ood`` (its cells flagged out of
    distribution), one row per micrograph read."""
    extra = [c for c in QC_COLUMNS if c != "n_cells"]
    ood = ood_per_image(cells)
    write_csv(path, ([im["image"], "" if im["plate"] is None else im["plate"], im.get("well") or "", im["protein"],
                      im["source"], im["n_cells"]] + [_fmt(im["qc"][c]) for c in extra]
                     + [im.get("qc_flags", ""), int(n)] for im, n in zip(cells.images, ood)),
              ["image", "plate", "well", "protein", "mask", "n_cells"] + extra + ["qc_flags", "n_ood"])


# --------------------------------------------------------------------------- quality control

def ood_per_image(cells):
    """int64 (micrographs,): cells of each micrograph of ``cells.images`` flagged out of distribution."""
    ood = np.asarray(cells.ood, bool)
    return np.asarray([int(ood[im["first"]:im["first"] + im["n_cells"]].sum()) for im in cells.images], np.int64)


def flagged_per_image(cells):
    """int64 (micrographs,): flagged cells of each micrograph: all its cells when QC flags it
    (``qc_flags``), else those out of distribution (the plate maps' "flagged cells")."""
    ood = ood_per_image(cells)
    return np.asarray([im["n_cells"] if im.get("qc_flags") else n for im, n in zip(cells.images, ood)], np.int64)


def _qc_values(cells):
    return {m: np.asarray([im["qc"][m] for im in cells.images], float) for m in QC_COLUMNS}


def mark_qc_flags(cells):
    """Set ``qc_flags`` of every micrograph of ``cells.images`` (:func:`deepyeast.analysis.qc.qc_flags`)."""
    from deepyeast.analysis.qc import qc_flags

    if cells.images:
        for im, flags in zip(cells.images, qc_flags(_qc_values(cells))):
            im["qc_flags"] = flags


def qc_summary(cells):
    """summary.json's ``qc``: micrographs flagged in all and by each measure, cells flagged (QC or out of
    distribution), and the rules."""
    from deepyeast.analysis.qc import QC_MIN_IMAGES, QC_OUTLIER, SATURATED_MAX

    flags = [im.get("qc_flags", "") for im in cells.images]
    return {"flagged_micrographs": sum(bool(f) for f in flags),
            "by_measure": {m: sum(m in f.split(";") for f in flags) for m in QC_COLUMNS},
            "flagged_cells": int(flagged_per_image(cells).sum()) if cells.images else 0,
            "rule": f"more than {QC_OUTLIER} robust standard deviations from the screen median on the suspicious "
                    f"side (n_cells, focus on a log scale; with at least {QC_MIN_IMAGES} micrographs); saturated "
                    f"share above {SATURATED_MAX}; no cells"}


OUTLINES_PER_MEASURE = 2
OUTLINES_MOST = 10
"""Micrographs drawn with their segmentation outlines in the report: the most suspicious
OUTLINES_PER_MEASURE by each QC measure, at most OUTLINES_MOST."""


def outline_micrographs(rows, cells, settings):
    """The report's sample of micrographs with their masks: a list of dicts ``where``, ``image``,
    ``measure`` (the QC measure that picked it), ``qc``, ``qc_flags``, ``micrograph`` (uint8 2 x H x W),
    ``mask`` (int H x W), read and segmented again as the run did (``settings``: the chunks'
    :class:`deepyeast.analysis.screen_run.ChunkSettings`).  A micrograph that cannot be read again
    (changed since) is left out, with a warning."""
    from deepyeast.analysis.qc import outline_sample
    from deepyeast.data.segment_cells import row_cells

    if not cells.images:
        return []
    by_where = {r["where"]: r for r in rows}
    out = []
    for i, measure in outline_sample(_qc_values(cells), OUTLINES_PER_MEASURE, OUTLINES_MOST):
        im = cells.images[i]
        try:
            micro, mask, _ = row_cells(by_where[im["where"]], settings.finding)
        except InputError as e:
            log.warning("%s: not drawn in the report (%s)", im["where"], e)
            continue
        out.append(dict(where=im["where"], image=im["image"], measure=measure, qc=im["qc"],
                        qc_flags=im.get("qc_flags", ""), micrograph=micro, mask=mask))
    return out


# --------------------------------------------------------------------------- the step

@dataclasses.dataclass(frozen=True)
class ClassifySettings:
    """What classify_screen does besides its inputs: how cells are read, found and cut
    (``finding``, :class:`deepyeast.data.segment_cells.CellFinding`; the crop size comes from the
    model), how the network runs (``inference``; ``compare_fp32``: also run fp32 and count the
    calls that change), the call rules (``rules``), cells per protein in the report
    (``gallery_cells``), bootstrap resamples of the accuracy intervals (``n_resamples``),
    micrographs per chunk (``chunk``; None: :data:`deepyeast.analysis.screen_run.CHUNK`), bad rows
    skipped (``skip_bad``) and an unfinished work folder of other settings discarded (``restart``)."""

    finding: CellFinding = CellFinding()
    inference: InferenceSettings = InferenceSettings()
    compare_fp32: bool = False
    rules: CallRules = CallRules()
    gallery_cells: int = GALLERY_CELLS
    n_resamples: int = 2000
    chunk: int = None
    skip_bad: bool = False
    restart: bool = False

    def describe(self, seed, chunk):
        """``summary.json``'s ``settings``: every knob, with the run's ``seed`` and ``chunk``."""
        f, inf = self.finding, self.inference
        return dict(segmentation=dataclasses.asdict(f.params), **f.fmt.describe(), resegment=f.resegment,
                    border=f.border, precision=inf.precision, device=inf.device, batch=inf.batch,
                    **dataclasses.asdict(self.rules), gallery_cells=self.gallery_cells, seed=seed, chunk=chunk)


def classify_screen(model_dir, images_csv, out_dir, settings=ClassifySettings(), context=RunContext()):
    """Classify the micrographs of ``images_csv`` with the bundle ``model_dir``; write ``out_dir``.

    ``settings``: :class:`ClassifySettings`; ``context``: the bootstrap's seed, where the chunks run
    (``scheduler``, ``jobs``), progress bars, the command recorded.  See the module doc.
    ``out_dir`` (replaced as a whole, atomically) receives:

    * ``cells.csv``: image,plate,well,protein,cell,x,y,area,padded,pred,class,prob_0..prob_{K-1}
      (+ label,true_class where the table has labels); x, y the centroid in pixels;
    * ``proteins.csv``: plate,well,protein,n_images,n_cells,pred,class,top1,top1_share,top2,
      top2_share,p_call,few_cells,low_confidence,possible_dual,no_cells,post_0..post_{K-1}
      (+ label,true_class,correct);
    * ``images.csv``: image,plate,well,protein,mask,n_cells and the QC measures per micrograph read;
    * ``summary.json``: counts, the flags' definitions, accuracies (labels given), the
      bf16-vs-fp32 changes (``compare_fp32``), the model, the settings, the command,
      ``reused_micrographs`` (taken over from an interrupted run) and ``run``: where the chunks ran
      and where the time went (``seconds`` of the chunks' phase, ``task_seconds`` per step of the
      chunks computed by this run: :data:`deepyeast.analysis.screen_run.STEPS`, ``tables_seconds``
      from the last chunk to the report);
    * ``report.html`` with ``figures/`` and ``gallery/`` (one strip of cells per protein);
    * ``rejects.txt`` when rows were skipped (``skip_bad``).

    The work runs in chunks of ``chunk`` micrographs on ``scheduler`` / ``jobs``
    (:mod:`deepyeast.analysis.screen_run`), kept in ``OUT.work`` until the output is written, so
    the same call after an interruption redoes only unfinished chunks (``restart`` discards a
    work folder of another model, table or settings instead of refusing it).  A second run into
    the same ``out_dir`` while one is running fails at once (:class:`StepFailed` naming its pid).

    Returns the summary dict.  Bad input (model, table, micrograph, mask) raises
    ``InputError`` naming the file and row, and no output is written; with ``skip_bad`` bad
    rows are listed in ``rejects.txt`` and the rest classified.
    """
    from deepyeast.analysis import screen_run
    from deepyeast.analysis.ood import OodScorer
    from deepyeast.model import read_bundle
    from deepyeast.analysis.screen_report import write_screen_report

    s = settings
    rules, gallery_cells, n_resamples, chunk, skip_bad = s.rules, s.gallery_cells, s.n_resamples, s.chunk, s.skip_bad
    seed, command, scheduler, jobs = context.seed, context.command, context.scheduler, context.jobs
    if gallery_cells < 1:
        raise InputError("min_cells and gallery_cells must be at least 1")
    bundle = read_bundle(model_dir)
    c, h, w = _crop_shape(bundle)
    classes = list(bundle.classes)
    scorer = OodScorer.from_bundle(bundle)
    rejects = Rejects(skip_bad)
    rows = read_screen_rows(images_csv, bundle.classes, rejects)
    run_settings = screen_run.ChunkSettings(
        model=os.path.abspath(bundle.path), finding=dataclasses.replace(s.finding, size=int(h)),
        inference=s.inference, compare_fp32=bool(s.compare_fp32), chunk=int(chunk or screen_run.CHUNK))
    if run_settings.chunk < 1:
        raise InputError(f"chunk must be at least 1, got {chunk}")
    check_replaceable(out_dir)  # before any work (and before OUT.work appears beside it)
    with output_lock(out_dir):
        remove_stale_partials(out_dir)
        work = screen_run.work_folder(out_dir)
        fp = screen_run.prepare_work(work, screen_run.fingerprint_parts(bundle, images_csv, run_settings), s.restart)
        run = screen_run.run_chunks(rows, work, fp, run_settings, scheduler, jobs, skip_bad, context.progress)
        chunks, tables_start = run.chunks, time.perf_counter()
        with atomic_path(out_dir, folder=True) as tmp:
            os.makedirs(tmp)
            crops_path = os.path.join(tmp, ".crops.u8")
            cells = assemble_cells(rows, chunks, work, fp, run_settings, bundle, crops_path, rejects)
            if scorer is not None:
                cells.ood = cells.ood_score > OOD_FLAG
            if not cells.images:
                raise InputError(f"{images_csv}: no readable micrograph" + (f" ({len(rejects.items)} rows skipped, "
                                                                              "see the messages above)"
                                                                              if rejects.items else ""))
            mark_qc_flags(cells)
            outlines = outline_micrographs(rows, cells, run_settings)
            calls = call_proteins(cells, classes, rules)
            acc = accuracies(cells, calls, len(classes), rules.min_cells, n_resamples, seed)
            summary = _summary(bundle, images_csv, cells, calls, acc, rejects, s.describe(seed, run_settings.chunk),
                               command)
            summary["reused_micrographs"] = int(run.reused)
            summary["qc"] = qc_summary(cells)
            summary["run"] = {"scheduler": scheduler, "jobs": int(jobs), **run.describe(),
                              "tables_seconds": round(time.perf_counter() - tables_start, 3)}
            write_cells_table(os.path.join(tmp, "cells.csv"), cells, classes)
            write_proteins_table(os.path.join(tmp, "proteins.csv"), calls, classes)
            write_images_table(os.path.join(tmp, "images.csv"), cells)
            rejects.write(tmp)
            write_screen_report(tmp, bundle, cells, calls, summary, gallery_cells, outlines)
            atomic_write_text(os.path.join(tmp, "summary.json"), json.dumps(summary, indent=1) + "\n")
            os.remove(crops_path)
        shutil.rmtree(work, ignore_errors=True)
    return summary


OOD_WARN_FACTOR = 3.0
OOD_WARN_MARGIN = 0.05
"""The report warns when the screen's flagged share is at least OOD_WARN_FACTOR times the training
(validation) cells' share and OOD_WARN_MARGIN above it."""
OOD_CAUSES = ("channel order (marker and protein swapped: --channels)",
              "bit depth (16-bit data scaled with the wrong --bits: cells too dark or saturated)",
              "magnification or binning (cells larger or smaller than the training crops' cells)",
              "focus (blurred fields: see the focus column of images.csv)",
              "a marker, strain, medium or microscope unlike the training screen's")


def ood_summary(bundle, cells, calls):
    """The out-of-distribution part of summary.json: available or not, counts, the flagged share
    beside the training share, and a warning with the likely causes when it is far above it."""
    meta = bundle.metadata.get("ood")
    if not meta:
        return {"available": False, "note": "the bundle has no out-of-distribution statistics (e.g. converted "
                                            "Keras weights): cells are not checked"}
    n = cells.n_cells
    flagged = int(np.sum(cells.ood))
    share = flagged / n if n else 0.0
    train = float(meta.get("training_flagged_share", 1 - meta.get("quantile", 0.99)))
    warn = n > 0 and share >= OOD_WARN_FACTOR * train and share >= train + OOD_WARN_MARGIN
    return {"available": True, "score": meta.get("score"), "threshold": meta.get("threshold"),
            "n_flagged": flagged, "share": share, "training_share": train,
            "proteins_with_flagged_cells": int(np.sum(calls.n_ood > 0)) if calls.n_ood is not None else 0,
            "warning": (f"{100 * share:.1f}% of the cells are flagged as unlike the training cells "
                        f"(training: {100 * train:.1f}%); check the set-up" if warn else None),
            "likely_causes": list(OOD_CAUSES) if warn else [],
            "temperature": meta.get("temperature"), "ece_before": meta.get("ece_before"),
            "ece_after": meta.get("ece_after")}


def _count_flags(calls):
    f = calls.flags
    return {name: int(np.sum(f[name])) for name in ("few_cells", "low_confidence", "possible_dual", "no_cells")}


def _summary(bundle, images_csv, cells, calls, acc, rejects, settings, command):
    classes = list(bundle.classes)
    has = calls.n_cells > 0
    per_class = np.bincount(calls.pred[has], minlength=len(classes)) if has.any() else np.zeros(len(classes), int)
    out = {
        "images_table": os.fspath(getattr(images_csv, "folder", images_csv)),
        "images_pattern": getattr(images_csv, "pattern", None),
        "model": {"path": os.fspath(bundle.path), "name": bundle.name, "classes": classes,
                  "input_shape": list(bundle.input_shape), "training": bundle.metadata.get("training", {}),
                  "metrics": bundle.metadata.get("metrics", {})},
        "n_images": len(cells.images),
        "n_segmented": sum(im["source"] == "segmented" for im in cells.images),
        "n_given_masks": sum(im["source"] == "given" for im in cells.images),
        "n_cells": cells.n_cells,
        "n_padded": int(cells.padded.sum()),
        "n_proteins": int(len(calls.key)),
        "n_proteins_called": int(has.sum()),
        "n_rejected": len(rejects.items),
        "rejected": [{"where": w, "reason": r} for w, r in rejects.items],
        "images_without_cells": [im["where"] for im in cells.images if im["n_cells"] == 0],
        "proteins_without_cells": [str(k) for k in calls.key[~has]],
        "proteins_per_class": {classes[j]: int(per_class[j]) for j in range(len(classes))},
        "cells_per_protein": ({"min": int(calls.n_cells[has].min()), "median": float(np.median(calls.n_cells[has])),
                               "max": int(calls.n_cells[has].max())} if has.any() else None),
        "flags": _count_flags(calls),
        "flag_definitions": CallRules(*(settings[k] for k in ("min_cells", "confidence", "dual_share")))
        .definitions(),
        "accuracy": acc,
        "ood": ood_summary(bundle, cells, calls),
        "precision_check": None,
        "settings": settings,
        "command": command,
    }
    if cells.probs_fp32 is not None:
        pred32 = cells.probs_fp32.argmax(axis=1) if cells.n_cells else np.zeros(0, int)
        changed = calls.pred_fp32 != calls.pred
        out["precision_check"] = {
            "precision": settings["precision"], "against": "fp32",
            "cells_changed": int(np.sum(pred32 != cells.pred)), "cells": cells.n_cells,
            "proteins_changed": int(np.sum(changed & has)), "proteins": int(has.sum()),
            "max_abs_prob_difference": float(np.abs(cells.probs_fp32 - cells.probs).max()) if cells.n_cells else 0.0,
            "changed_proteins": [str(k) for k in calls.key[changed & has]]}
    return out
