"""Result manifests: what an analysis hands to the report.

Every analysis writes, last of all its outputs, ``OUT/result.json`` (:data:`MANIFEST_NAME`),
and the report (:mod:`deepyeast.report.make_report`) finds every manifest under the run folder: it
needs no edit for a new analysis.  Its presence marks a finished step (a Make target).

Schema (``"schema": "deepyeast.result/1"``; only ``name`` and ``title`` are required)::

    {
      "schema":   "deepyeast.result/1",
      "name":     "proteins",                 # unique in a run; metrics.json nests details under it
      "title":    "Protein-level calls",      # the report section's heading
      "order":    30,                          # sections sorted by it (then by folder)
      "summary":  "One paragraph for a biologist: what was done, on what, the result in words.",
      "metrics":  {                            # its numbers, copied to metrics.json's top level
          "protein_accuracy": {"value": 0.99, "correct": 279, "total": 282}
      },                                       # a count {value, correct, total[, lo, hi]}, a number,
                                               # or an object of those (names unique in a run)
      "headline": [{"metric": "protein_accuracy", "label": "Network accuracy per protein (test)",
                    "unit": "proteins", "paper": 0.989}],   # rows of the report's first table
      "figures":  [{"file": "fig.png", "caption": "Figure 2A: ..."}],   # relative to the folder
      "tables":   [{"title": "...", "caption": "what each number counts",
                    "columns": ["class", "cells", "recall"], "rows": [["ER", 812, 0.91]],
                    "file": "per_class.csv"}],  # rows shown (keep it short); file: the full table
      "missing":  [{"what": "non-cell filter", "reason": "the published archive has no non-cell labels",
                    "option": "NONCELLS=FILE"}],          # parts that could not run, and how to get them
      "links":    [{"file": "report.html", "text": "the step's own page"}],   # pages of the step (relative
                                               # to the folder), linked from the report
      "details":  {...},                       # anything else (settings, raw numbers): metrics.json
                                               # and a collapsed element of the report only
      "seeds":    {"bootstrap": 0},
      "command":  "python analysis/protein_level.py ..."
    }

Write one with :func:`write_result`; the report reads them with :func:`find_results`.
"""

import dataclasses
import json
import math
import os

from deepyeast.utils.io import NON_FINITE_KEY, InputError, atomic_write_text, json_safe

__all__ = ["MANIFEST_NAME", "SCHEMA", "Result", "write_result", "read_result", "find_results", "count_metric", "headline",
           "figure", "table", "missing_part", "clear_result"]

MANIFEST_NAME = "result.json"
SCHEMA = "deepyeast.result/1"

_KEYS = ("schema", "name", "title", "order", "summary", "metrics", "headline", "figures", "tables", "missing",
         "links", "details", "seeds", "command")


def count_metric(correct, total, lo=None, hi=None):
    """A count metric ``{"value": correct / total, "correct", "total"[, "lo", "hi"]}`` (value None when total is 0)."""
    correct, total = int(correct), int(total)
    out = {"value": correct / total if total else None, "correct": correct, "total": total}
    if lo is not None and hi is not None:
        out["lo"], out["hi"] = float(lo), float(hi)
    return out


def headline(metric, label, unit, paper=None):
    """A row of the report's first table: ``metric`` (a key of the manifest's metrics), ``label``
    (what it is), ``unit`` (what its counts count: "cells", "proteins"), ``paper`` (the paper's value)."""
    return {"metric": metric, "label": label, "unit": unit, "paper": paper}


def figure(file, caption):
    """A figure entry: ``file`` relative to the result folder (PNG), ``caption`` (what it shows)."""
    return {"file": os.fspath(file), "caption": caption}


def table(title, columns, rows, caption="", file=None):
    """A table entry: short ``rows`` (lists, one value per column) shown in the report; ``caption``
    says what each number counts; ``file`` the full table (CSV) beside the manifest."""
    out = {"title": title, "caption": caption, "columns": list(columns), "rows": [list(r) for r in rows]}
    if file is not None:
        out["file"] = os.fspath(file)
    return out


def missing_part(what, reason, option=None):
    """A ``missing`` entry: ``what`` could not be done, ``reason`` why, ``option`` how to get it."""
    return {"what": what, "reason": reason, "option": option}


def _clean(obj):
    """JSON-safe copy: numpy scalars and arrays to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    return str(obj)


@dataclasses.dataclass(frozen=True)
class Result:
    """What a step's ``result.json`` says (the fields of the module docstring): ``name`` and
    ``title``, the ``summary`` in words, ``metrics`` (name -> number or count), ``headline`` rows
    (:func:`headline`), ``figures`` (:func:`figure`), ``tables`` (:func:`table`), ``missing``
    parts (:func:`missing_part`), free ``details``, the ``seeds``, the ``command`` that ran, the
    report's ``order`` and ``links`` to the step's own pages (:func:`figure`-like dicts)."""

    name: str
    title: str
    summary: str = ""
    metrics: dict = None
    headline: tuple = ()
    figures: tuple = ()
    tables: tuple = ()
    missing: tuple = ()
    details: dict = None
    seeds: dict = None
    command: str = None
    order: int = 100
    links: tuple = ()


def write_result(out_dir, result):
    """Write ``out_dir/result.json`` (atomically) from ``result`` (:class:`Result`) and return its
    dict; see the module docstring.

    Call it after every other output of the step is written: its presence marks a finished step.
    Figure and table files are checked to exist (relative to ``out_dir``).  The file is strict
    JSON: a NaN or infinite value is written as null and listed in ``details["non_finite"]``.
    """
    r = result
    name, title, summary, metrics, headline, figures = r.name, r.title, r.summary, r.metrics, r.headline, r.figures
    tables, missing, details, seeds, command, order, links = (r.tables, r.missing, r.details, r.seeds, r.command,
                                                              r.order, r.links)
    out_dir = os.fspath(out_dir)
    metrics = dict(metrics or {})
    for row in headline:
        if row["metric"] not in metrics:
            raise ValueError(f"headline metric {row['metric']!r} is not in metrics ({', '.join(metrics)})")
    for f in list(figures) + list(links):
        if not os.path.isfile(os.path.join(out_dir, f["file"])):
            raise ValueError(f"{out_dir}: {f['file']} was not written")
    result = {"schema": SCHEMA, "name": name, "title": title, "order": order, "summary": summary,
              "metrics": metrics, "headline": list(headline), "figures": list(figures), "tables": list(tables),
              "missing": [dict(m) for m in missing], "details": details or {}, "seeds": seeds or {},
              "command": command}
    if links:
        result["links"] = [dict(link) for link in links]
    _, replaced = json_safe(result)
    result = _clean(result)
    if replaced:  # a NaN metric is written as null, with a note saying so
        result["details"][NON_FINITE_KEY] = replaced
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, MANIFEST_NAME), json.dumps(result, indent=1, allow_nan=False) + "\n")
    return result


def clear_result(out_dir):
    """Remove a stale ``out_dir/result.json`` at a step's start: a run killed midway must not leave
    the old manifest that marks a finished step."""
    path = os.path.join(os.fspath(out_dir), MANIFEST_NAME)
    if os.path.exists(path):
        os.remove(path)


def _check(result, path):
    if not isinstance(result, dict):
        raise InputError(f"{path}: a result manifest is a JSON object")
    if result.get("schema") != SCHEMA:
        raise InputError(f"{path}: schema {result.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("name", "title"):
        if not isinstance(result.get(key), str) or not result[key]:
            raise InputError(f"{path}: '{key}' must be a non-empty string")
    unknown = set(result) - set(_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    types = {"metrics": dict, "details": dict, "seeds": dict, "headline": list, "figures": list, "tables": list,
             "missing": list, "links": list}
    for key, kind in types.items():
        if key in result and not isinstance(result[key], kind):
            raise InputError(f"{path}: '{key}' must be a JSON {'object' if kind is dict else 'array'}")
    for link in result.get("links", []):
        if not isinstance(link, dict) or not isinstance(link.get("file"), str) or not link.get("text"):
            raise InputError(f"{path}: a 'links' entry needs 'file' and 'text'")
    for name, m in result.get("metrics", {}).items():
        if isinstance(m, dict):
            v = m.get("value")
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise InputError(f"{path}: metric '{name}': 'value' is {v!r}, not a number")
        elif m is not None and (isinstance(m, bool) or not isinstance(m, (int, float))):
            raise InputError(f"{path}: metric '{name}' is {m!r}: a number or a count object")
    for row in result.get("headline", []):
        if not isinstance(row, dict) or row.get("metric") not in result.get("metrics", {}):
            raise InputError(f"{path}: a headline row needs 'metric', one of 'metrics' ({row!r})")
    for f in result.get("figures", []):
        if not isinstance(f, dict) or "file" not in f:
            raise InputError(f"{path}: a figure entry needs 'file' (and 'caption')")
    for t in result.get("tables", []):
        if not isinstance(t, dict) or not isinstance(t.get("columns"), list) or not isinstance(t.get("rows"), list):
            raise InputError(f"{path}: a table entry needs 'columns' and 'rows' arrays")
        for i, row in enumerate(t["rows"]):
            if not isinstance(row, list) or len(row) != len(t["columns"]):
                raise InputError(f"{path}: table {t.get('title', '')!r} row {i + 1} has "
                                 f"{len(row) if isinstance(row, list) else 'no'} values for "
                                 f"{len(t['columns'])} columns")
    for m in result.get("missing", []):
        if not isinstance(m, dict) or not m.get("what") or not m.get("reason"):
            raise InputError(f"{path}: a 'missing' entry needs 'what' and 'reason' (and 'option')")
    return result


def read_result(path):
    """Read and check one manifest; an unreadable or malformed one is an :class:`InputError`."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    return _check(result, path)


def find_results(run_dir):
    """Every manifest under ``run_dir``: list of ``(folder relative to run_dir, result dict)``.

    Sorted by ``order``, then folder.  Two manifests with one ``name`` are an :class:`InputError`.
    """
    found = []
    for folder, dirs, files in os.walk(run_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if MANIFEST_NAME in files:
            rel = os.path.relpath(folder, run_dir)
            found.append((rel, read_result(os.path.join(folder, MANIFEST_NAME))))
    names = {}
    for rel, result in found:
        if result["name"] in names:
            raise InputError(f"{os.path.join(run_dir, rel, MANIFEST_NAME)}: name {result['name']!r} is also used by "
                             f"{os.path.join(run_dir, names[result['name']], MANIFEST_NAME)}")
        names[result["name"]] = rel
    found.sort(key=lambda item: (item[1].get("order", 100), item[0]))
    return found
