"""The replication report: one self-contained HTML page and a ``metrics.json``.

Run folder layout read by :func:`build_report` (paths relative to ``--run DIR``; each can
be overridden, see :data:`REPORT_INPUTS`)::

    cells/cell_metrics.json        REQUIRED  analysis/evaluate_cells.py --out DIR/cells
    cells/per_class.csv                      (same step) per-class precision/recall table
    cells/confusion_rates.csv                (same step) Figure 2D as numbers
    cells/*.png                              Figures 2A, 2B, 2D (embedded)
    proteins.json                            analysis/protein_level.py --out DIR/proteins.csv
    proteins_mixtures.csv                    (same step, with --mixtures)
    rf_proteins.json                         analysis/protein_level.py on the forest's predictions
    quality/quality_filter.json              quality filter: keys cell_accuracy, cell_accuracy_filtered,
                                             rf_cell_accuracy, rf_cell_accuracy_filtered (count dicts)
    transfer/transfer.json                   analysis/transfer.py: transfer_accuracy[feature_set][n],
                                             best_layer
    interpret/interpret.json                 analysis/interpret.py
    commands.txt                             the exact commands of the run, one a line (e.g. by make)

Every ``*.png`` in ``cells/``, ``proteins/``, ``rf/``, ``quality/``, ``transfer/``, ``interpret/``,
``figures/`` and ``DIR`` itself is embedded (base64), and every ``*.json`` there is shown
as a table.  A missing result input is named in the report (a banner and the
``missing`` list of ``metrics.json``, ``complete: false``); missing extras
(``proteins_mixtures.csv``, ``commands.txt``) are listed under ``not_provided``; a missing
or unreadable required input, or any input that is present but malformed, is an
:class:`~deepyeast.io_utils.InputError` and nothing is written.
"""

import base64
import csv
import datetime
import glob
import html
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess

from deepyeast import __version__
from deepyeast.constants import MIN_CELLS_PER_PROTEIN, PAPER_RESULTS
from deepyeast.utils.io import InputError, atomic_write_text

REQUIRED, RESULT, EXTRA = "required", "result", "extra"

REPORT_INPUTS = {
    # key: (default path relative to the run dir, kind, produced by)
    "cells": ("cells/cell_metrics.json", REQUIRED, "analysis/evaluate_cells.py --predictions CELLS.csv "
                                                   "[--rf-predictions RF.csv] --out DIR/cells"),
    "per_class": ("cells/per_class.csv", RESULT, "analysis/evaluate_cells.py"),
    "confusion": ("cells/confusion_rates.csv", RESULT, "analysis/evaluate_cells.py"),
    "proteins": ("proteins.json", RESULT, "analysis/protein_level.py --predictions CELLS.csv --out DIR/proteins.csv"),
    "mixtures": ("proteins_mixtures.csv", EXTRA, "analysis/protein_level.py ... --mixtures proteins.csv"),
    "rf_proteins": ("rf_proteins.json", RESULT, "analysis/protein_level.py --predictions RF.csv "
                                                "--out DIR/rf_proteins.csv"),
    "quality": ("quality/quality_filter.json", RESULT, "analysis/quality_filter.py"),
    "transfer": ("transfer/transfer.json", RESULT, "analysis/transfer.py --out DIR/transfer"),
    "interpret": ("interpret/interpret.json", RESULT, "analysis/interpret.py --out DIR/interpret"),
    "commands": ("commands.txt", EXTRA, "the pipeline (Makefile) listing the commands it ran"),
}
"""Inputs of the report: key -> (path relative to the run folder, kind, producer).

Kinds: ``required`` (missing = error, nothing written); ``result`` (a paper result: missing
= named in the report's banner and in ``metrics.json["missing"]``, ``complete`` false);
``extra`` (missing = noted in ``metrics.json["not_provided"]`` only; e.g. the mixed-protein
table exists only for screens with known mixtures, as the synthetic one)."""

FIGURE_DIRS = ("cells", "proteins", "rf", "quality", "transfer", "interpret", "figures", ".")
"""Folders of the run dir whose ``*.png`` files are embedded and ``*.json`` files tabulated."""

FIGURE_CAPTIONS = {
    "cells/fig2a_recall.png": "Figure 2A: recall per compartment, network vs random forest "
                              "(95% stratified bootstrap intervals; dashed: medians).",
    "cells/fig2b_precision.png": "Figure 2B: precision per compartment, network vs random forest "
                                 "(95% stratified bootstrap intervals; dashed: medians).",
    "cells/fig2d_confusion.png": "Figure 2D: network confusion matrix, rates per true compartment.",
    "cells/fig2d_confusion_rf.png": "Random-forest confusion matrix, rates per true compartment.",
    "transfer/transfer_accuracy.png": "Figure 4C: transfer accuracy vs examples per class.",
    "transfer/transfer_layers.png": "Transfer accuracy vs examples per class, every layer.",
    "interpret/tsne.png": "Figure 3B: t-SNE of cells at each layer, coloured by compartment.",
    "interpret/patches.png": "Figure 3A: input patches that most activate chosen neurons.",
    "interpret/neurons.png": "Figure 3D: neurons' mutual information with the class and correlation "
                             "to CellProfiler features.",
}

METRIC_ROWS = (
    # metrics.json key, description, paper key
    ("cell_accuracy", "Network accuracy per cell (test)", "cell_accuracy"),
    ("cell_kappa", "Network Cohen's kappa per cell", "cell_kappa"),
    ("cell_accuracy_filtered", "Network accuracy per cell after removing non-cells", "cell_accuracy_filtered"),
    ("protein_accuracy", "Network accuracy per protein (all test proteins)", "protein_accuracy"),
    ("protein_accuracy_min10", f"Network accuracy per protein (>= {MIN_CELLS_PER_PROTEIN} cells)",
     "protein_accuracy_min10"),
    ("rf_cell_accuracy", "Random forest accuracy per cell", "rf_cell_accuracy"),
    ("rf_cell_accuracy_filtered", "Random forest accuracy per cell after removing non-cells",
     "rf_cell_accuracy_filtered"),
    ("rf_protein_accuracy", "Random forest accuracy per protein", "rf_protein_accuracy"),
    ("rf_protein_accuracy_min10", f"Random forest accuracy per protein (>= {MIN_CELLS_PER_PROTEIN} cells)", None),
)

VERSION_PACKAGES = ("numpy", "torch", "scipy", "scikit-learn", "scikit-image", "matplotlib", "protobuf", "lmdb",
                    "opencv-python-headless", "pillow", "tifffile", "rpy2", "cp-measure")


# ----------------------------------------------------------------------------- reading inputs

def _read_json(path, key):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({key} input): line {e.lineno}, column {e.colno}: {e.msg}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({key} input): {e.strerror}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object ({key} input)")
    return data


def _read_csv(path, key):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise InputError(f"{path}: cannot read ({key} input): {e.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV ({key} input): {e}") from None
    if not rows:
        raise InputError(f"{path}: empty CSV ({key} input)")
    width = len(rows[0])
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != width:
            raise InputError(f"{path}: line {i} has {len(r)} fields, the header has {width} ({key} input)")
    return rows


def _count_entry(obj, where):
    """Normalise a count dict ({value|accuracy, correct, total, ...}); error naming ``where``."""
    if obj is None:
        return None
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {"value": float(obj)}
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a count like {{\"value\": 0.87, \"correct\": 87, \"total\": 100}}")
    out = dict(obj)
    if "value" not in out and "accuracy" in out:
        out["value"] = out.pop("accuracy")
    if "value" not in out and "correct" in out and "total" in out and out["total"]:
        out["value"] = out["correct"] / out["total"]
    if "value" not in out:
        raise InputError(f"{where}: count has no 'value' (keys: {sorted(obj)})")
    if out["value"] is not None and not isinstance(out["value"], (int, float)):
        raise InputError(f"{where}: 'value' is {out['value']!r}, not a number")
    return out


def _find_seeds(obj, prefix=""):
    found = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = f"{prefix}.{k}" if prefix else k
            if "seed" in k.lower() and isinstance(v, (int, str, list)) and not isinstance(v, bool):
                found[name] = v
            elif isinstance(v, dict):
                found.update(_find_seeds(v, name))
    return found


def _versions():
    out = {"python": platform.python_version(), "deepyeast": __version__, "platform": platform.platform()}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    r = shutil.which("R")
    if r:
        try:
            line = subprocess.run([r, "--version"], capture_output=True, text=True, timeout=20).stdout.splitlines()
            out["R"] = line[0] if line else "unknown"
        except (OSError, subprocess.SubprocessError):
            out["R"] = "unknown"
    else:
        out["R"] = "not found"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        res = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        out["git commit"] = res.stdout.strip() if res.returncode == 0 else "no commit"
    except (OSError, subprocess.SubprocessError):
        out["git commit"] = "unknown"
    return out


def collect_inputs(run_dir, overrides=None):
    """Locate and read every report input; return ``(data, missing)``.

    ``data`` maps input keys to parsed content (JSON dicts, CSV row lists, text lines);
    ``missing`` lists ``{"input", "path", "producer", "kind"}`` for absent optional inputs.
    Raises :class:`InputError` for a missing required input or any malformed file.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    unknown = set(overrides) - set(REPORT_INPUTS)
    if unknown:
        raise ValueError(f"unknown report inputs {sorted(unknown)}; known: {sorted(REPORT_INPUTS)}")
    if not os.path.isdir(run_dir):
        raise InputError(f"{run_dir}: run folder does not exist")
    data, missing, paths = {}, [], {}
    for key, (rel, kind, producer) in REPORT_INPUTS.items():
        path = overrides.get(key) or os.path.join(run_dir, rel)
        paths[key] = path
        if not os.path.exists(path):
            if kind == REQUIRED:
                raise InputError(f"{path}: required report input '{key}' is missing (produced by: {producer})")
            missing.append({"input": key, "path": path, "producer": producer, "kind": kind})
            continue
        if path.endswith(".json"):
            data[key] = _read_json(path, key)
        elif path.endswith(".csv"):
            data[key] = _read_csv(path, key)
        else:
            with open(path, encoding="utf-8") as f:
                data[key] = [ln.rstrip("\n") for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    if "cell_accuracy" not in data["cells"]:
        raise InputError(f"{paths['cells']}: no 'cell_accuracy' entry (write it with analysis/evaluate_cells.py)")
    data["_paths"] = paths
    return data, missing


def find_figures(run_dir):
    """PNG files to embed: ``[(relative path, absolute path)]`` in :data:`FIGURE_DIRS` order."""
    out, seen = [], set()
    for d in FIGURE_DIRS:
        for path in sorted(glob.glob(os.path.join(run_dir, d, "*.png"))):
            rel = os.path.normpath(os.path.relpath(path, run_dir))
            if rel not in seen:
                seen.add(rel)
                out.append((rel, path))
    return out


def find_json(run_dir, exclude=()):
    """Other JSON files to tabulate: ``[(relative path, absolute path)]``."""
    out = []
    exclude = {os.path.abspath(p) for p in exclude}
    for d in FIGURE_DIRS:
        for path in sorted(glob.glob(os.path.join(run_dir, d, "*.json"))):
            if os.path.abspath(path) not in exclude:
                out.append((os.path.normpath(os.path.relpath(path, run_dir)), path))
    return out


# ----------------------------------------------------------------------------- metrics

def assemble_metrics(data, missing):
    """The ``metrics.json`` dict from collected inputs (see :func:`build_report`)."""
    paths = data["_paths"]
    cells = data["cells"]
    m = {
        "cell_accuracy": _count_entry(cells.get("cell_accuracy"), f"{paths['cells']}: cell_accuracy"),
        "cell_kappa": _count_entry(cells.get("cell_kappa"), f"{paths['cells']}: cell_kappa"),
        "rf_cell_accuracy": _count_entry(cells.get("rf_cell_accuracy"), f"{paths['cells']}: rf_cell_accuracy"),
        "rf_cell_kappa": _count_entry(cells.get("rf_cell_kappa"), f"{paths['cells']}: rf_cell_kappa"),
        "cell_accuracy_filtered": None,
        "rf_cell_accuracy_filtered": None,
        "protein_accuracy": None,
        "protein_accuracy_min10": None,
        "rf_protein_accuracy": None,
        "rf_protein_accuracy_min10": None,
        "mixed_proteins_top_two": None,
        "transfer_accuracy": None,
    }
    notes = []
    if m["rf_cell_accuracy"] is None:
        notes.append({"input": "cells (random forest)", "path": paths["cells"],
                      "producer": "analysis/evaluate_cells.py --rf-predictions RF.csv"})
    if "quality" in data:
        q = data["quality"]
        for key in ("cell_accuracy_filtered", "rf_cell_accuracy_filtered"):
            if key in q:
                m[key] = _count_entry(q[key], f"{paths['quality']}: {key}")
            else:
                notes.append({"input": f"quality ({key})", "path": paths["quality"],
                              "producer": f"a '{key}' entry in the quality-filter JSON"})
    for src, prefix in (("proteins", ""), ("rf_proteins", "rf_")):
        if src in data:
            p = data[src]
            for key in ("protein_accuracy", "protein_accuracy_min10"):
                if key not in p:
                    raise InputError(f"{paths[src]}: no '{key}' entry (write it with analysis/protein_level.py)")
                m[prefix + key] = _count_entry(p[key], f"{paths[src]}: {key}")
            if not prefix and p.get("mixtures") is not None:
                m["mixed_proteins_top_two"] = _count_entry(p["mixtures"], f"{paths[src]}: mixtures")
    if "transfer" in data:
        t = data["transfer"]
        ta = t.get("transfer_accuracy")
        if not isinstance(ta, dict):
            raise InputError(f"{paths['transfer']}: no 'transfer_accuracy' object (feature_set -> n -> count)")
        by_set = {}
        for fs, curve in ta.items():
            if not isinstance(curve, dict):
                raise InputError(f"{paths['transfer']}: transfer_accuracy['{fs}'] is not an object (n -> count)")
            by_set[fs] = {str(n): _count_entry(c, f"{paths['transfer']}: transfer_accuracy['{fs}']['{n}']")
                          for n, c in sorted(curve.items(), key=lambda kv: _as_number(kv[0]))}
        best = t.get("best_layer")
        m["transfer_accuracy"] = {
            "best_layer": best,
            "network": by_set.get(best) if best else None,
            "cellprofiler": by_set.get("cellprofiler"),
            "by_feature_set": by_set,
        }
    m["network_minus_forest_per_cell"] = cells.get("network_minus_forest")
    m["checks"] = demo_checks(m)
    strip = [{k: v for k, v in x.items() if k != "kind"} for x in missing]
    m["missing"] = [s for s, x in zip(strip, missing) if x["kind"] != EXTRA] + notes
    m["not_provided"] = [s for s, x in zip(strip, missing) if x["kind"] == EXTRA]
    m["complete"] = not m["missing"]
    m["paper"] = dict(PAPER_RESULTS)
    return m


def _as_number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("inf")


def _value(entry):
    return None if entry is None else entry.get("value")


def demo_checks(m):
    """The end-to-end demo's conditions (issue 6), each True/False, or None when an input is missing."""
    net, rf = _value(m["cell_accuracy"]), _value(m["rf_cell_accuracy"])
    prot, filt = _value(m["protein_accuracy"]), _value(m["cell_accuracy_filtered"])
    rf_filt = _value(m["rf_cell_accuracy_filtered"])

    def both(a, b, f):
        return None if a is None or b is None else bool(f(a, b))

    below = None if net is None else bool(net < 0.99 and (rf is None or rf < 0.99))
    return {
        "network_beats_forest_per_cell": both(net, rf, lambda a, b: a > b),
        "protein_above_cell_accuracy": both(prot, net, lambda a, b: a > b),
        "filtering_raises_network_accuracy": both(filt, net, lambda a, b: a > b),
        "filtering_raises_forest_accuracy": both(rf_filt, rf, lambda a, b: a > b),
        "no_classifier_reaches_0_99_per_cell": below,
    }


# ----------------------------------------------------------------------------- HTML

CHECK_LABELS = {
    "network_beats_forest_per_cell": "network beats the random forest per cell",
    "protein_above_cell_accuracy": "protein-level accuracy exceeds per-cell accuracy",
    "filtering_raises_network_accuracy": "removing non-cells raises the network's accuracy",
    "filtering_raises_forest_accuracy": "removing non-cells raises the forest's accuracy",
    "no_classifier_reaches_0_99_per_cell": "neither classifier reaches 0.99 per cell",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #bbb;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#eef2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.missing{background:#fff3cd;border:1px solid #e0b84c;padding:.6em 1em;margin:1em 0}
.ok{color:#1a7f37}.bad{color:#b42318}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.9em;color:#444}
.wide{overflow-x:auto}pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.85em}
"""


def _e(x):
    return html.escape(str(x), quote=True)


def _fmt(v):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _fmt_count(entry):
    if entry is None:
        return '<span class="bad">missing</span>'
    v = entry.get("value")
    text = "—" if v is None else f"{v:.3f}"
    if entry.get("correct") is not None and entry.get("total") is not None:
        text += f" ({int(entry['correct']):,}/{int(entry['total']):,})"
    elif entry.get("total") is not None:
        text += f" (n = {int(entry['total']):,})"
    if entry.get("lo") is not None and entry.get("hi") is not None:
        text += f" [{entry['lo']:.3f}, {entry['hi']:.3f}]"
    return _e(text)


def _table(header, rows, numeric_from=None):
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = []
        for j, v in enumerate(r):
            cls = ' class="num"' if numeric_from is not None and j >= numeric_from else ""
            cells.append(f"<td{cls}>{v if isinstance(v, _Raw) else _e(_fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _flatten(obj, prefix="", limit=200):
    rows = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                rows += _flatten(v, name, limit)
            elif isinstance(v, list) and v and isinstance(v[0], (dict, list)):
                rows.append((name, f"[{len(v)} entries]"))
            else:
                rows.append((name, v))
    return rows[:limit]


def _short(v):
    try:
        x = float(v)
    except ValueError:
        return v
    if v.strip().lstrip("-").isdigit():
        return v
    return f"{x:.3f}"


def _csv_table(rows, max_rows=200):
    header, body = rows[0], [[_short(v) for v in r] for r in rows[1:max_rows + 1]]
    more = len(rows) - 1 - max_rows
    note = f"<p>({more} more rows in the CSV)</p>" if more > 0 else ""
    return '<div class="wide">' + _table(header, body) + "</div>" + note


def _embed_png(path):
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputError(f"{path}: not a PNG file (figure to embed)")
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def render_html(run_dir, data, metrics, figures, other_json, versions, command, title):
    """Return the report page (str) from collected data; see :func:`build_report`."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>",
             f"<p>Run folder: <code>{_e(run_dir)}</code>. Generated "
             f"{_e(datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} "
             f"by deepyeast {_e(__version__)}.</p>"]
    if metrics["missing"]:
        items = "".join(f"<li><b>{_e(m['input'])}</b>: <code>{_e(m['path'])}</code> not found — produced by "
                        f"<code>{_e(m['producer'])}</code></li>" for m in metrics["missing"])
        parts.append(f'<div class="missing" id="incomplete"><b>This report is incomplete.</b> '
                     f"These inputs are missing, so their results are absent below:<ul>{items}</ul></div>")
    else:
        parts.append('<p class="ok" id="complete">All report inputs were found.</p>')

    # Table 1: ours vs the paper.
    parts.append("<h2>1. Headline results beside the paper</h2>")
    rows = []
    for key, desc, paper_key in METRIC_ROWS:
        paper = PAPER_RESULTS.get(paper_key) if paper_key else None
        rows.append([key, desc, _Raw(_fmt_count(metrics.get(key))), "—" if paper is None else f"{paper:.3f}"])
    parts.append(_table(["metric", "what", "this run (correct/total) [95% CI]", "paper"], rows))
    parts.append("<p>Paper: Pärnamaa &amp; Parts (2017), G3 7:1385. Counts are cells (per-cell rows) or proteins "
                 "(per-protein rows); intervals are stratified bootstrap percentiles.</p>")
    checks = metrics["checks"]
    parts.append(_table(["demo condition (issue 6)", "holds"],
                        [[CHECK_LABELS.get(k, k), _Raw('<span class="bad">not evaluated (input missing)</span>')
                          if v is None else _Raw(f'<span class="{"ok" if v else "bad"}">{"yes" if v else "NO"}</span>')]
                         for k, v in checks.items()]))

    lead = metrics.get("network_minus_forest_per_cell")
    if lead:
        parts.append(f"<p>Network minus forest, per cell: {lead['value']:+.3f}; paired bootstrap 95% interval "
                     f"[{lead['cells_ci'][0]:+.3f}, {lead['cells_ci'][1]:+.3f}] resampling cells, "
                     f"[{lead['proteins_ci'][0]:+.3f}, {lead['proteins_ci'][1]:+.3f}] resampling whole proteins "
                     f"({_e(lead['n_proteins'])} proteins; their cells are not independent).</p>")

    # Per cell.
    parts.append("<h2>2. Per-cell evaluation</h2>")
    cells = data["cells"]
    for name in ("network", "random_forest"):
        s = cells.get(name)
        if s:
            bs = s.get("bootstrap", {})
            parts.append(f"<p><b>{_e(name.replace('_', ' '))}</b>: accuracy {_fmt_count(s.get('accuracy'))}, "
                         f"Cohen's κ {_e(_fmt(s.get('kappa')))}, {_e(s.get('n_cells'))} cells; bootstrap "
                         f"{_e(bs.get('n_resamples'))} stratified resamples (seed {_e(bs.get('seed'))}).</p>")
    if "per_class" in data:
        parts.append("<h3>Precision and recall per compartment (95% intervals)</h3>" + _csv_table(data["per_class"]))
    if "confusion" in data:
        parts.append("<h3>Network confusion, rates per true compartment (rows)</h3>" + _csv_table(data["confusion"]))

    # Protein level.
    parts.append("<h2>3. Protein level</h2>")
    if "proteins" in data:
        p = data["proteins"]
        parts.append(f"<p>Dirichlet posterior per protein (uniform prior, cells' predicted probabilities as soft "
                     f"counts), MAP call. {_e(p.get('n_proteins'))} proteins, {_e(p.get('n_cells'))} cells.</p>")
        rows = [["network, all proteins", _Raw(_fmt_count(metrics["protein_accuracy"]))],
                [f"network, >= {p.get('min_cells', MIN_CELLS_PER_PROTEIN)} cells",
                 _Raw(_fmt_count(metrics["protein_accuracy_min10"]))],
                ["random forest, all proteins", _Raw(_fmt_count(metrics["rf_protein_accuracy"]))],
                ["random forest, >= 10 cells", _Raw(_fmt_count(metrics["rf_protein_accuracy_min10"]))]]
        if metrics["mixed_proteins_top_two"] is not None:
            rows.append(["mixed proteins: both true classes are the top two",
                         _Raw(_fmt_count(metrics["mixed_proteins_top_two"]))])
        parts.append(_table(["protein-level accuracy", "value"], rows))
        if "mixtures" in data:
            parts.append("<h3>Mixed proteins</h3>" + _csv_table(data["mixtures"]))
    else:
        parts.append('<p class="bad">Protein-level results missing (no proteins.json).</p>')

    # Quality filter and transfer summaries.
    parts.append("<h2>4. Quality filter (removing non-cells)</h2>")
    if "quality" in data:
        parts.append(_table(["entry", "value"], _flatten(data["quality"])))
    else:
        parts.append('<p class="bad">Quality-filter results missing.</p>')
    parts.append("<h2>5. Transfer learning to new compartments</h2>")
    ta = metrics["transfer_accuracy"]
    if ta:
        sizes = sorted({n for curve in ta["by_feature_set"].values() for n in curve}, key=_as_number)
        rows = []
        for fs, curve in ta["by_feature_set"].items():
            label = fs + (" (best layer on validation)" if fs == ta["best_layer"] else "")
            rows.append([label] + [_Raw(_fmt_count(curve.get(n))) if n in curve else "—" for n in sizes])
        parts.append("<p>Test accuracy (correct/total) [95% bootstrap interval] by examples per class.</p>")
        parts.append(_table(["feature set"] + [f"n = {n}" for n in sizes], rows))
    else:
        parts.append('<p class="bad">Transfer-learning results missing.</p>')

    # Figures.
    parts.append("<h2>6. Figures</h2>")
    if not figures:
        parts.append('<p class="bad">No figures found.</p>')
    for rel, path in figures:
        caption = FIGURE_CAPTIONS.get(rel.replace(os.sep, "/"), rel)
        parts.append(f'<figure data-file="{_e(rel)}"><img alt="{_e(caption)}" src="{_embed_png(path)}">'
                     f"<figcaption>{_e(caption)} <code>{_e(rel)}</code></figcaption></figure>")

    # Other JSON outputs.
    if other_json:
        parts.append("<h2>7. Other step outputs</h2>")
        for rel, content in other_json:
            parts.append(f"<h3><code>{_e(rel)}</code></h3>" + _table(["entry", "value"], _flatten(content)))

    # Reproducibility.
    parts.append("<h2>8. Reproducibility: commands, seeds, versions</h2>")
    commands = list(data.get("commands", []))
    for key in ("cells", "proteins", "rf_proteins", "quality", "transfer", "interpret"):
        c = data.get(key, {}).get("command") if isinstance(data.get(key), dict) else None
        if c and c not in commands:
            commands.append(c)
    if command:
        commands.append(command)
    parts.append("<h3>Commands</h3><pre>" + _e("\n".join(commands) if commands else "(none recorded)") + "</pre>")
    parts.append("<h3>Seeds</h3>" + _table(["where", "seed"], [[k, v] for k, v in metrics["seeds"].items()]))
    parts.append("<h3>Versions</h3>" + _table(["component", "version"], list(versions.items())))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def build_report(run_dir, out_html, out_metrics, overrides=None, command=None,
                 title="DeepYeast replication report"):
    """Write the HTML report and ``metrics.json`` for the run folder ``run_dir``.

    ``overrides``: {input key: path} replacing defaults of :data:`REPORT_INPUTS`.
    ``metrics.json`` holds the count dicts ``cell_accuracy``, ``cell_kappa``,
    ``cell_accuracy_filtered``, ``protein_accuracy``, ``protein_accuracy_min10``,
    ``rf_cell_accuracy``, ``rf_cell_accuracy_filtered``, ``rf_protein_accuracy``,
    ``rf_protein_accuracy_min10``, ``mixed_proteins_top_two`` (null when absent),
    ``transfer_accuracy`` ({best_layer, network, cellprofiler, by_feature_set}: n -> count),
    ``network_minus_forest_per_cell`` (value, cells_ci, proteins_ci: paired bootstrap; null
    without a forest on the same cells), ``checks`` (issue 6 demo conditions), ``complete``, ``missing``, ``paper``, ``seeds``,
    ``versions``, ``figures``.  Everything is read and rendered before either file is
    written; both are written atomically.  Returns the metrics dict.
    """
    run_dir = os.fspath(run_dir)
    data, missing = collect_inputs(run_dir, overrides)
    metrics = assemble_metrics(data, missing)
    seeds = {}
    for key in ("cells", "proteins", "rf_proteins", "quality", "transfer", "interpret"):
        if isinstance(data.get(key), dict):
            seeds.update({f"{key}: {k}": v for k, v in _find_seeds(data[key]).items()})
    known = [p for k, p in data["_paths"].items() if p.endswith(".json")]
    other = [(rel, _read_json(path, rel)) for rel, path in find_json(run_dir, exclude=known + [out_metrics])]
    for rel, content in other:
        seeds.update({f"{rel}: {k}": v for k, v in _find_seeds(content).items()})
    metrics["seeds"] = seeds
    versions = _versions()
    metrics["versions"] = versions
    figures = find_figures(run_dir)
    metrics["figures"] = [rel for rel, _ in figures]
    page = render_html(run_dir, data, metrics, figures, other, versions, command, title)
    if os.path.exists(out_metrics):  # written last: its presence marks a finished report
        os.remove(out_metrics)
    atomic_write_text(out_html, page)
    atomic_write_text(out_metrics, json.dumps(metrics, indent=2) + "\n")
    return metrics
