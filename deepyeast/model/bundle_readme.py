"""The model-zoo ``readme.md`` of a model bundle, written from its ``bundle.json`` facts.

:func:`deepyeast.model.bundle.write_bundle` calls :func:`render_readme` once the facts are known:
Caffe model-zoo front matter (name, caffemodel, sha1), then the input convention, the classes,
training, metrics, provenance, use and the files with their checksums.
"""

import numpy as np

from deepyeast.model.bundle import BUNDLE_JSON, DEPLOY, MEAN, README, WEIGHTS

__all__ = ["render_readme"]


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _metric_text(value):
    """A metric as text: a number, or a count dict {value, correct, total, ci...}."""
    if isinstance(value, dict):
        text = _fmt(value.get("value"))
        if "correct" in value and "total" in value:
            text += f" ({value['correct']}/{value['total']})"
        ci = value.get("ci") or value.get("ci95")
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            text += f", 95% interval [{_fmt(ci[0])}, {_fmt(ci[1])}]"
        return text
    return _fmt(value)


def _caffe_float(x):
    """``x`` as Caffe stores a float field (float32), printed with enough digits to round-trip."""
    return float(np.float32(x))


def render_readme(meta):
    """The model-zoo ``readme.md`` of a bundle from its ``bundle.json`` dict."""
    files = meta["files"]
    inp = meta["input"]
    scale = inp["scale"]
    c, h, w = inp["shape"]
    front = [
        "---",
        f"name: {meta['name']}",
        f"caffemodel: {WEIGHTS}",
        f"sha1: {files[WEIGHTS]['sha1']}",
        f"license: {meta.get('license', 'unspecified')}",
        "caffe_version: 1.0",
        "---",
        "",
        f"# {meta['name']}",
        "",
    ]
    body = []
    if meta.get("description"):
        body += [meta["description"].strip(), ""]
    if meta.get("authors"):
        body += ["Weights by " + ", ".join(meta["authors"]) + ".", ""]
    mean_note = inp.get("mean_note", "")
    body += [
        "## Input",
        "",
        f"One cell per crop, centred: N x {c} x {h} x {w} uint8 (0-255), Caffe's C x H x W layout.",
        "",
    ]
    body += [f"* channel {i}: {name}" for i, name in enumerate(inp["channels"])]
    body += [
        "",
        "Preprocessing, the same arithmetic as a Caffe `Data` layer's transform (float32):",
        "",
        "```",
        f"blob = (crop - mean) * {_fmt(scale)}" if scale != 1.0 else "blob = crop - mean",
        "```",
        "",
        f"`mean` is `{MEAN}` (float32 1 x {c} x {h} x {w}){': ' + mean_note if mean_note else ''}. "
        f"`{DEPLOY}` takes the preprocessed crops in its input blob `{inp['blob']}` and gives the class "
        f"probabilities in `{meta['output']['blob']}`. In a Caffe net that reads an LMDB of raw crops the same "
        "preprocessing is",
        "",
        "```",
        f'transform_param {{ mean_file: "{MEAN}"' + (f" scale: {_caffe_float(scale)!r}" if scale != 1.0 else "")
        + " }",
        "```",
        "",
        "with no mirroring and no cropping; with pycaffe's `caffe.io.Transformer`: "
        f"`set_mean('{inp['blob']}', mean)`" + (f", `set_input_scale('{inp['blob']}', {_fmt(scale)})`"
                                                if scale != 1.0 else "") + ", no channel swap, no raw scale.",
        "",
        "## Classes",
        "",
        "| index | class |",
        "|---|---|",
    ]
    body += [f"| {i} | {name} |" for i, name in enumerate(meta["classes"])]
    body.append("")
    if meta.get("training"):
        body += ["## Training", "", "| | |", "|---|---|"]
        body += [f"| {k} | {_fmt(v)} |" for k, v in meta["training"].items()]
        body.append("")
    if meta.get("metrics"):
        body += ["## Metrics", "", "| measure | value |", "|---|---|"]
        body += [f"| {k} | {_metric_text(v)} |" for k, v in meta["metrics"].items()]
        body.append("")
    ood = meta.get("ood")
    body += ["## Out-of-distribution check and calibration", ""]
    if ood:
        body += [
            f"`ood.npz` holds the class means and the tied inverse covariance of the `{ood['blob']}` features of "
            f"{ood['training_cells']} training cells (the network computing in "
            f"{ood.get('network_precision', 'fp32')}), and the mean and inverse covariance of their input statistics. "
            f"Feature score: the {ood['score']} (threshold {_fmt(ood['threshold'])}); input score: the "
            f"{ood.get('input_score', '')} (threshold {_fmt(ood.get('input_threshold'))}); each threshold is the "
            f"{_fmt(100 * ood['quantile'])}th percentile of {ood['validation_cells']} validation cells. "
            f"{ood.get('flag', '')}: classify_screen leaves such cells out of the protein calls "
            f"({_fmt(100 * ood['training_flagged_share'])}% of the validation cells are flagged).",
            "",
            f"Temperature fitted on the validation cells (negative log-likelihood): T = {_fmt(ood['temperature'])}; "
            f"expected calibration error ({ood['ece_bins']} bins) {_fmt(ood['ece_before'])} before, "
            f"{_fmt(ood['ece_after'])} after (probabilities softmax(logits / T); calls unchanged).",
            ""]
    else:
        body += ["Not available: this bundle carries no statistics of its training cells, so cells unlike them "
                 "are not flagged.", ""]
    if meta.get("source"):
        body += ["## Source", "", "| | |", "|---|---|"]
        body += [f"| {k} | {_fmt(v)} |" for k, v in meta["source"].items()]
        body.append("")
    body += [
        "## Use",
        "",
        "```sh",
        "python analysis/classify_screen.py --model MODEL_DIR --images IMAGES.csv --out OUT",
        "python analysis/export_bioimageio.py MODEL_DIR model.zip    # a bioimage.io package",
        "```",
        "",
        "```python",
        "from deepyeast.model import read_bundle",
        "bundle = read_bundle('MODEL_DIR')                # checks checksums, classes, shapes",
        f"probs = bundle.predictor()(crops)                # uint8 N x {c} x {h} x {w} -> float32 N x "
        f"{len(meta['classes'])}",
        "```",
        "",
        "## Files",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
    ]
    body += [f"| {name} | {info['bytes']} | `{info['sha256']}` |" for name, info in files.items() if name != README]
    body += ["", f"`{BUNDLE_JSON}` holds the facts above for programs (and the readme's sha256).", ""]
    return "\n".join(front + body)
