"""A model bundle as a bioimage.io model package (ilastik, deepImageJ, QuPath, napari read it).

``export_bioimageio(MODEL_DIR, OUT.zip)`` writes a zip with

* ``rdf.yaml`` -- the model description in the current bioimage.io format (0.5),
  validated by ``bioimageio.spec`` before the zip appears under its name;
* ``deepyeast.pt`` -- TorchScript of the bundle's own network: our engine
  (:class:`deepyeast.engine.Net`) running ``deploy.prototxt`` with the bundle's
  weights, traced, with the preprocessing folded in (below);
* ``test_input.npy`` / ``test_output.npy`` -- float32 crops and the class
  probabilities our engine gives for them (the package must reproduce them to
  1e-4: ``config.bioimageio.reproducibility_tolerance``);
* ``cover.png`` (2:1, the test crops with their calls) and ``README.md``.

Preprocessing, decided honestly: a DeepYeast net expects ``(crop - mean) *
scale`` where ``mean`` is a per-pixel image (2 x 64 x 64, the training set's
average crop).  bioimage.io's standard preprocessing operations are per tensor
or per channel (``fixed_zero_mean_unit_variance`` takes one mean per channel),
so a mean *image* cannot be written as one of them.  The mean image and the
scale are therefore constants inside the TorchScript module, and the package's
input is the raw crop: float32 intensities 0-255 (8-bit data as DeepYeast crops
them), axes batch, channel (0 = red cytosolic marker, 1 = green GFP protein), y,
x of 64 x 64.  The rdf therefore lists no preprocessing step; README.md says so.

No ONNX weights: exporting them needs the ``onnx``/``onnxscript`` packages and
testing them ``onnxruntime``, three more dependencies for a format that the
four consumers above also read as TorchScript.
"""

import os
import shutil
import tempfile
import warnings

import numpy as np

from deepyeast.constants import CLASS_NAMES, MEAN_FILE
from deepyeast.model.bundle import Bundle, read_bundle
from deepyeast.utils.io import (InputError, atomic_path, check_writable, output_lock, remove_stale_partials,
                                 write_error)

__all__ = ["export_bioimageio", "trace_bundle", "test_crops", "validate_package", "PAPER_DOI", "PAPER_CITATION"]

PAPER_DOI = "10.1534/g3.116.033654"
PAPER_CITATION = ("Parnamaa T, Parts L (2017). Accurate classification of protein subcellular localization from "
                  "high-throughput microscopy images using deep learning. G3: Genes, Genomes, Genetics 7(5): "
                  "1385-1392.")
INPUT_ID = "crops"
OUTPUT_ID = "probabilities"
WEIGHTS_FILE = "deepyeast.pt"
TOLERANCE = 1e-4


def test_crops(bundle, n_per_class=1, seed=0):
    """Crops for the package's test tensors: the bundle's examples, else freshly rendered synthetic cells.

    Returns (uint8 N x C x H x W, provenance text).
    """
    examples = bundle.examples()
    if examples is not None and len(examples):
        return np.asarray(examples), "example crops stored in the model bundle"
    if tuple(bundle.classes) != tuple(CLASS_NAMES) or tuple(bundle.input_shape) != (2, 64, 64):
        raise InputError(f"{bundle.path}: the bundle has no examples.npy and is not a 12-class DeepYeast model, "
                         "so no test crops can be made for it; give --test-crops")
    from deepyeast.data.make_synthetic import example_crops

    crops = np.concatenate([example_crops("main", k, n_per_class, seed=seed) for k in range(len(CLASS_NAMES))])
    return crops, f"synthetic cells rendered by deepyeast.data.make_synthetic (seed {seed}), {n_per_class} per class"


def trace_bundle(bundle, example):
    """TorchScript (``torch.jit.trace``) of the bundle's net with its preprocessing; ``example`` float32 crops.

    What is traced is the module of the bundle's :class:`deepyeast.engine.inference.Predictor`
    (float32 crops 0-255 -> ``(crop - mean) * input_scale`` -> the net -> N x K probabilities), on the
    CPU in float32 with BatchNorm kept as layers, so the package holds the bundle's own weights.
    """
    import torch

    module = bundle.predictor(fold=False).module.eval().requires_grad_(False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript; bioimage.io needs it
        traced = torch.jit.trace(module, torch.from_numpy(example), check_trace=False)
    return traced


def _cover(path, crops, probs, classes):
    """2:1 PNG: the test crops (red marker, green protein) titled with the call and its probability."""
    from deepyeast.utils.plotting import crop_rgb, plt

    n = min(len(crops), 12)
    ncol = 6 if n > 6 else n
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(8, 4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(crop_rgb(crops[i], marker_gain=0.8), interpolation="nearest")
        k = int(probs[i].argmax())
        ax.set_title(f"{classes[k]}\n{probs[i, k]:.2f}", fontsize=8)
    fig.suptitle("DeepYeast: one yeast cell per crop (red: cytosolic marker, green: GFP protein) and its call",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)  # not save_figure: its tight bounding box would lose the 2:1 shape of a cover
    plt.close(fig)


def _readme(bundle, n_test, test_source, max_diff):
    meta = bundle.metadata
    c, h, w = bundle.input_shape
    scale = bundle.input_scale
    lines = [
        f"# {bundle.name}",
        "",
        meta.get("description") or "DeepYeast: subcellular localization of a GFP-tagged yeast protein from one cell.",
        "",
        "An 11-layer convolutional network (8 convolutions, 3 fully connected layers; Parnamaa & Parts, G3 2017) "
        f"that assigns a {h} x {w} crop of one budding-yeast cell to one of {bundle.n_classes} compartments.",
        "",
        "## Input",
        "",
        f"`{INPUT_ID}`: float32, axes batch, channel, y, x = N x {c} x {h} x {w}, **raw 8-bit intensities 0-255** "
        "(one cell centred per crop; 16-bit micrographs are scaled to 8 bits first, as DeepYeast's crop step does).",
        "",
    ]
    lines += [f"* channel {i}: {name}" for i, name in enumerate(bundle.channels)]
    lines += [
        "",
        "No preprocessing step is listed in rdf.yaml because the network's own normalisation is inside the "
        "TorchScript module: it computes",
        "",
        "```",
        f"(crop - mean) * {scale:.9g}" if scale != 1.0 else "crop - mean",
        "```",
        "",
        f"with `mean` a fixed {c} x {h} x {w} image ({meta['input'].get('mean_note') or 'the per-pixel mean of the training crops'}). "
        "A per-pixel mean image cannot be written as a standard bioimage.io preprocessing operation (those take "
        "one value per tensor or per channel), so it travels with the weights as a constant.",
        "",
        "## Output",
        "",
        f"`{OUTPUT_ID}`: float32 N x {bundle.n_classes}, softmax probabilities; channel k is class k:",
        "",
        "| k | class |",
        "|---|---|",
    ]
    lines += [f"| {i} | {name} |" for i, name in enumerate(bundle.classes)]
    lines += [""]
    if meta.get("training"):
        lines += ["## Training", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in meta["training"].items()]
        lines += [""]
    lines += [
        "## Validation",
        "",
        f"The test tensors are {n_test} crops ({test_source}) and the probabilities DeepYeast's own engine "
        "(a PyTorch implementation of Caffe's layers, checked against real Caffe 1.0) gives for them with the "
        f"bundle's Caffe files; the TorchScript weights reproduce them to {max_diff:.1e} (tolerance "
        f"{TOLERANCE:g}, `bioimageio test`).",
        "",
    ]
    if meta.get("metrics"):
        lines += ["Accuracy of this model as recorded in its bundle:", "", "| measure | value |", "|---|---|"]
        for k, v in meta["metrics"].items():
            val = v.get("value") if isinstance(v, dict) else v
            lines.append(f"| {k} | {val} |")
        lines += [""]
    lines += [
        "To validate it on your own data, classify held-out cells whose compartments are known and compare "
        "per cell and per protein (DeepYeast: `analysis/classify_screen.py` with a `label` column, or "
        "`analysis/predict.py` then `analysis/evaluate_cells.py`). Expect lower accuracy on images that differ "
        "from the training screen (microscope, magnification, markers, strain background).",
        "",
        "## Files",
        "",
        f"Converted from the DeepYeast model bundle `{os.path.basename(os.path.abspath(bundle.path))}` "
        "(`deploy.prototxt`, `weights.caffemodel` sha256 "
        f"`{meta['files']['weights.caffemodel']['sha256']}`, `mean.binaryproto`) by "
        "`analysis/export_bioimageio.py`.",
        "",
        "## Citation",
        "",
        PAPER_CITATION + f" doi:{PAPER_DOI}",
        "",
    ]
    return "\n".join(lines)


def _rdf(bundle, pytorch_version, authors):
    import bioimageio.spec.model.v0_5 as v0_5

    meta = bundle.metadata
    channel_names = ["marker", "protein"] if bundle.input_shape[0] == 2 else [f"channel{i}" for i in
                                                                               range(bundle.input_shape[0])]
    c, h, w = bundle.input_shape
    name = " ".join("".join(ch if ch.isalnum() or ch in "_+- ()" else ("-" if ch == "/" else " ")
                             for ch in bundle.name).split())
    if len(name) < 5:
        name = "DeepYeast"
    description = ("Classifies one yeast cell (2-channel fluorescence crop: cytosolic marker + GFP-tagged protein) "
                   f"into {bundle.n_classes} subcellular compartments (DeepYeast).")
    return {
        "type": "model",
        "format_version": v0_5.ModelDescr.implemented_format_version,
        "name": name[:128],
        "description": description,
        "authors": [{"name": a} for a in authors],
        "cite": [{"text": PAPER_CITATION, "doi": PAPER_DOI}],
        "license": "MIT",
        "tags": ["classification", "yeast", "saccharomyces-cerevisiae", "protein-localization",
                 "fluorescence-light-microscopy", "2d", "cells", "pytorch", "torchscript", "deepyeast"],
        "covers": [{"source": "cover.png"}],
        "documentation": {"source": "README.md"},
        "inputs": [{
            "id": INPUT_ID,
            "description": f"raw 8-bit intensities (0-255) of one cell crop, {h}x{w}; channel 0 marker, 1 protein",
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": channel_names},
                     {"type": "space", "id": "y", "size": h},
                     {"type": "space", "id": "x", "size": w}],
            "test_tensor": {"source": "test_input.npy"},
            "sample_tensor": {"source": "sample_input.tif"},
            "data": {"type": "float32", "range": [0.0, 255.0]},
        }],
        "outputs": [{
            "id": OUTPUT_ID,
            "description": "softmax probability of each compartment",
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": list(bundle.classes)}],
            "test_tensor": {"source": "test_output.npy"},
            "sample_tensor": {"source": "sample_output.tif"},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": {"torchscript": {
            "source": WEIGHTS_FILE,
            "pytorch_version": pytorch_version,
            "comment": ("traced from the Caffe deploy net and weights of a DeepYeast model bundle run by "
                        "DeepYeast's engine; mean-image subtraction and input scaling are inside"),
        }},
        "config": {
            "bioimageio": {
                "reproducibility_tolerance": [{"absolute_tolerance": TOLERANCE, "relative_tolerance": 0.0,
                                               "mismatched_elements_per_million": 0}],
            },
            "deepyeast": {
                "bundle_name": meta.get("name", ""),
                "weights_sha256": meta["files"]["weights.caffemodel"]["sha256"],
                "deploy_sha256": meta["files"]["deploy.prototxt"]["sha256"],
                "mean_sha256": meta["files"][MEAN_FILE]["sha256"],
                "input_scale": bundle.input_scale,
                "preprocessing": "(crop - mean image) * input_scale, inside the TorchScript module",
                "source": meta.get("source", {}),
            },
        },
    }


def _write_yaml(data, path):
    from bioimageio.spec._internal.io_utils import write_yaml
    from pathlib import Path
    write_yaml(data, Path(path))


def validate_package(path):
    """Load a package with ``bioimageio.spec`` (file checks included); InputError with the reason if invalid."""
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(os.fspath(path), perform_io_checks=True)
    if isinstance(descr, InvalidDescr):
        raise InputError(f"{path}: not a valid bioimage.io model: {descr.validation_summary.format()}")
    return descr


def export_bioimageio(model_dir, out_zip, test_input=None, authors=None):
    """Write the bioimage.io package of the bundle ``model_dir`` to ``out_zip`` (atomically); returns a summary dict.

    ``test_input``: uint8 N x C x H x W crops for the test tensors (default:
    :func:`test_crops`).  ``authors``: names for rdf.yaml (default: the
    bundle's ``authors``, else "DeepYeast replication").
    """
    import torch

    bundle = model_dir if isinstance(model_dir, Bundle) else read_bundle(model_dir)
    if test_input is None:
        crops, test_source = test_crops(bundle)
    else:
        crops, test_source = np.asarray(test_input), "crops given to the exporter"
    expected = bundle.predictor()(crops)  # our engine: the reference the package must reproduce
    x = crops.astype(np.float32)
    traced = trace_bundle(bundle, x[:2])
    with torch.no_grad():
        got = traced(torch.from_numpy(x)).numpy()
    max_diff = float(np.abs(got - expected).max())
    if not max_diff <= TOLERANCE:
        raise RuntimeError(f"the traced module differs from the engine by {max_diff:.2e} (> {TOLERANCE})")
    authors = list(authors or bundle.metadata.get("authors") or ["DeepYeast replication"])
    out_zip = os.fspath(out_zip)
    check_writable(out_zip)
    with output_lock(out_zip):  # one writer; what a killed one left (.NAME.*.partial*) is removed first
        remove_stale_partials(out_zip)
        _write_package(bundle, traced, crops, expected, authors, test_source, max_diff, out_zip)
    return {"path": out_zip, "n_test": int(len(crops)), "max_abs_diff_vs_engine": max_diff,
            "test_source": test_source, "classes": list(bundle.classes)}


def _write_package(bundle, traced, crops, expected, authors, test_source, max_diff, out_zip):
    """The package's files in a scratch folder beside ``out_zip`` (named as its partial, so a killed run's
    is removed by the next), zipped onto ``out_zip`` atomically; the test input is ``crops`` as float32.
    TorchScript is serialised in memory and written by Python: its own file writer aborts the process
    (SIGABRT) on a full disk."""
    import io

    import torch
    from bioimageio.spec import save_bioimageio_package

    x = crops.astype(np.float32)
    parent = os.path.dirname(os.path.abspath(out_zip))
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out_zip)}.", suffix=".partial-work", dir=parent)
    try:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(traced, buffer)
        with open(os.path.join(work, WEIGHTS_FILE), "wb") as f:
            f.write(buffer.getbuffer())
        np.save(os.path.join(work, "test_input.npy"), x)
        np.save(os.path.join(work, "test_output.npy"), expected.astype(np.float32))
        import tifffile
        tifffile.imwrite(os.path.join(work, "sample_input.tif"), x[0])
        tifffile.imwrite(os.path.join(work, "sample_output.tif"), expected[:1].astype(np.float32))
        _cover(os.path.join(work, "cover.png"), crops, expected, bundle.classes)
        with open(os.path.join(work, "README.md"), "w", encoding="utf-8") as f:
            f.write(_readme(bundle, len(crops), test_source, max_diff))
        _write_yaml(_rdf(bundle, torch.__version__.split("+")[0], authors), os.path.join(work, "rdf.yaml"))
        validate_package(os.path.join(work, "rdf.yaml"))
        with atomic_path(out_zip, suffix=".zip") as tmp:
            try:
                save_bioimageio_package(os.path.join(work, "rdf.yaml"), output_path=tmp, local_files_only=True)
            except ValueError as err:
                raise InputError(f"{out_zip}: bioimage.io package would be invalid: {err}") from None
    except OSError as err:
        raise (write_error(out_zip, err) or err) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
