"""The replication report: one self-contained HTML page and ``metrics.json`` for a run folder.

The report is built from the result manifests the analyses write (``*/result.json``,
:mod:`deepyeast.utils.manifest`), found anywhere under the run folder, so a new analysis
appears in it without any edit here.  The page, for a biologist:

1. the headline numbers beside the paper's (every manifest's ``headline`` rows), each count
   saying what it counts, every forest number marked with what features the forest learned
   from (the ``forest`` manifest), what was not done for want of data (every manifest's
   ``missing`` entries, with the option that supplies it), and the paper's comparisons checked
   on this run;
2. one section per result, in the manifests' ``order``: a short summary, its figures with
   captions, its short tables with captions, what could not be done and how to get it, and
   every other number behind a collapsed element;
3. other figures of the run (``RUN/*.png``, ``RUN/figures/*.png``, e.g. the synthetic gallery);
4. commands, seeds and versions, collapsed.

A missing expected result (:data:`~deepyeast.report.metrics_json.EXPECTED_RESULTS`) is named in
a banner and in ``metrics.json`` (``complete: false``); a missing required one or any malformed
manifest is an :class:`~deepyeast.utils.io.InputError` and nothing is written.
"""

import base64
import datetime
import glob
import json
import os

from deepyeast import __version__
from deepyeast.report.metrics_json import CHECK_LABELS, assemble_metrics, collect_results, versions
from deepyeast.utils.html_page import CSS as _CSS, Raw as _Raw, escape as _e, fmt_value as _fmt
from deepyeast.utils.html_page import format_count as _fmt_count, html_table as _table
from deepyeast.utils.io import InputError, atomic_write_json, atomic_write_text

__all__ = ["build_report", "render_html", "OTHER_FIGURE_DIRS", "CSS", "escape", "html_table", "format_count", "Raw"]

OTHER_FIGURE_DIRS = (".", "figures")
"""Folders of the run whose PNGs not named by any manifest are shown under "Other figures"."""

COMMANDS_FILE = "commands.txt"
"""The commands of the run, one a line (written by the pipeline); shown in the report."""

def _embed_png(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read figure to embed: {e.strerror}") from None
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputError(f"{path}: not a PNG file (figure to embed)")
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def _figure(run_dir, rel, caption):
    src = _embed_png(os.path.join(run_dir, rel))
    return (f'<figure data-file="{_e(rel)}"><img alt="{_e(caption)}" src="{src}">'
            f"<figcaption>{_e(caption)} <code>{_e(rel)}</code></figcaption></figure>")


def _details(label, obj):
    if not obj:
        return ""
    return (f"<details><summary>{_e(label)}</summary><pre>{_e(json.dumps(obj, indent=1, sort_keys=True))}</pre>"
            "</details>")


def _other_figures(run_dir, named):
    out = []
    for d in OTHER_FIGURE_DIRS:
        for path in sorted(glob.glob(os.path.join(run_dir, d, "*.png"))):
            rel = os.path.normpath(os.path.relpath(path, run_dir))
            if rel not in named and rel not in out:
                out.append(rel)
    return out


FOREST_RESULT = "forest"
"""Name of the random-forest baseline's manifest; its ``details["cellprofiler_features"]`` says what
features the forest learned from, shown next to every forest number."""


def _forest_features(results):
    """``{short, text}`` of the forest's features, or None (no forest in the run)."""
    for _folder, r in results:
        if r["name"] == FOREST_RESULT:
            f = (r.get("details") or {}).get("cellprofiler_features")
            if isinstance(f, dict) and f.get("text"):
                return f
    return None


def _is_forest_metric(name):
    """A metric that is a number of the random forest (or of CellProfiler features)."""
    return name.startswith("rf_") or "cellprofiler" in name


def _fmt_paper(paper, unit=""):
    if paper is None:
        return "—"
    if isinstance(paper, dict):
        return _Raw(_fmt_count(paper, unit))
    return f"{paper:.3f}"


def _headline_section(results, metrics):
    rows = []
    forest = _forest_features(results)
    marked = False
    for _folder, r in results:
        for h in r.get("headline", []):
            value = metrics.get(h["metric"])
            if value is None and r.get("missing"):
                cell = _Raw(f'<span class="notrun">not run: see <a href="#result-{_e(r["name"])}">'
                            f'{_e(r["title"])}</a></span>')
            else:
                cell = _Raw(_fmt_count(value, h.get("unit", "")))
            label = h.get("label") or h["metric"]
            if forest and _is_forest_metric(h["metric"]):
                label += " †"
                marked = True
            rows.append([label, cell, _fmt_paper(h.get("paper"), h.get("unit", ""))])
    parts = ["<h2>Headline results beside the paper</h2>"]
    if rows:
        parts.append(_table(["result", "this run: value (right/total) [95% interval]", "paper"], rows))
        caption = ("Paper: Pärnamaa &amp; Parts (2017), G3 7:1385. Each count says what it counts (test cells or "
                   "test proteins); intervals are bootstrap percentiles.")
        if marked:
            caption += f" † The forest's features: {_e(forest['text'])}"
        parts.append(f'<p class="caption">{caption}</p>')
    else:
        parts.append("<p>No result of this run reports a headline number.</p>")
    not_done = [(r, m) for _folder, r in results for m in r.get("missing", [])]
    if not_done:
        items = "".join(f'<li><a href="#result-{_e(r["name"])}">{_e(r["title"])}</a>: {_e(m["what"])} — '
                        f'{_e(m["reason"])}.' + (f" To include it: <code>{_e(m['option'])}</code>." if m.get("option")
                                                 else "") + "</li>" for r, m in not_done)
        parts.append(f'<div class="missing" id="not-done"><b>Not done in this run</b> (the data it needs were not '
                     f"given; each is null in metrics.json and listed under not_provided):<ul>{items}</ul></div>")
    checks = dict(metrics["checks"])
    labels = dict(CHECK_LABELS)
    for key, claim in (metrics.get("paper_claims") or {}).items():  # the paper's claims in words (section "paper")
        checks[key], labels[key] = claim.get("holds"), f"the paper's claim: {claim.get('claim')}"
    parts.append("<h3>The paper's comparisons, checked on this run</h3>")
    parts.append(_table(["comparison", "holds"], [
        [labels.get(k, k), _Raw('<span class="bad">not evaluated (a result is missing or not run)</span>')
         if v is None else _Raw(f'<span class="{"ok" if v else "bad"}">{"yes" if v else "NO"}</span>')]
        for k, v in checks.items()]))
    return "\n".join(parts)


def _result_section(run_dir, folder, r, number, forest=None):
    parts = [f'<section id="result-{_e(r["name"])}"><h2>{number}. {_e(r["title"])}</h2>']
    if r.get("summary"):
        parts.append(f"<p>{_e(r['summary'])}</p>")
    if forest and r["name"] != FOREST_RESULT and any(_is_forest_metric(k) for k in r.get("metrics", {})):
        parts.append(f'<p class="note">Random-forest numbers here learned from {_e(forest["text"])}</p>')
    for f in r.get("figures", []):
        parts.append(_figure(run_dir, os.path.normpath(os.path.join(folder, f["file"])), f.get("caption", "")))
    for t in r.get("tables", []):
        parts.append(f"<h3>{_e(t.get('title', ''))}</h3>")
        if t["rows"]:
            parts.append(_table(t["columns"], t["rows"]))
        else:
            parts.append("<p>No rows.</p>")
        caption = t.get("caption", "")
        if t.get("file"):
            caption += f" Full table: {os.path.normpath(os.path.join(folder, t['file']))}."
        if caption:
            parts.append(f'<p class="caption">{_e(caption.strip())}</p>')
    for link in r.get("links", []):
        href = os.path.normpath(os.path.join(folder, link["file"])).replace(os.sep, "/")
        parts.append(f'<p><a href="{_e(href)}">{_e(link["text"])}</a> (<code>{_e(href)}</code>)</p>')
    for m in r.get("missing", []):
        option = f" To include it: <code>{_e(m['option'])}</code>." if m.get("option") else ""
        parts.append(f'<p class="note">Not done: {_e(m["what"])} — {_e(m["reason"])}.{option}</p>')
    parts.append(_details("All numbers of this step", {"metrics": r.get("metrics", {}), "details": r.get("details", {})}))
    parts.append("</section>")
    return "\n".join(parts)


def render_html(run_dir, results, metrics, other_figures, commands, vers, title):
    """The report page (str); see the module docstring."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>",
             f"<p>Run folder: <code>{_e(run_dir)}</code>. Generated {_e(now)} by deepyeast {_e(__version__)}.</p>"]
    if metrics["missing"]:
        items = "".join(f"<li><b>{_e(m['input'])}</b>: <code>{_e(m['path'])}</code> not found — produced by "
                        f"<code>{_e(m['producer'])}</code></li>" for m in metrics["missing"])
        parts.append(f'<div class="missing" id="incomplete"><b>This report is incomplete.</b> '
                     f"These results are missing, so they are absent below:<ul>{items}</ul></div>")
    else:
        parts.append('<p class="ok" id="complete">Every expected result was found.</p>')
    parts.append(_headline_section(results, metrics))
    forest = _forest_features(results)
    for i, (folder, r) in enumerate(results, start=1):
        parts.append(_result_section(run_dir, folder, r, i, forest))
    if other_figures:
        parts.append("<h2>Other figures</h2>")
        for rel in other_figures:
            parts.append(_figure(run_dir, rel, os.path.splitext(os.path.basename(rel))[0].replace("_", " ")))
    parts.append("<h2>Reproducibility</h2>")
    parts.append('<p class="note" id="spread">What a reproduction of this run looks like: the network\'s numbers '
                 "depend on the CPU type (its convolution kernels round differently) and, as much, on the training "
                 "seed; the forest's do not depend on the CPU (its features are rounded as they are computed), only "
                 "on its seed. <code>python bench/bench_seed_spread.py</code> reruns the network over three training "
                 "seeds and the forest over three forest seeds on this run's features; docs/results.md gives the "
                 "demo's spread.</p>")
    parts.append("<details><summary>Commands of this run</summary><pre>"
                 + _e("\n".join(commands) if commands else "(none recorded)") + "</pre></details>")
    parts.append("<details><summary>Seeds</summary>" + _table(["where", "seed"], [[k, _fmt(v)] for k, v in
                                                                                    metrics["seeds"].items()])
                 + "</details>")
    parts.append("<details><summary>Versions</summary>" + _table(["component", "version"], list(vers.items()))
                 + "</details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _read_commands(run_dir):
    path = os.path.join(run_dir, COMMANDS_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return [ln.rstrip("\n") for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the run's commands: {e}") from None


def build_report(run_dir, out_html, out_metrics, command=None, title="DeepYeast replication report", expect=None):
    """Write the HTML report and ``metrics.json`` (:mod:`deepyeast.report.metrics_json`) for ``run_dir``.

    ``expect``: the results a complete report has (default: the paper's,
    :data:`~deepyeast.report.metrics_json.EXPECTED_RESULTS`).  Everything is read and rendered
    before either file is written; both are written atomically, ``metrics.json`` last.
    Returns the metrics dict.
    """
    run_dir = os.fspath(run_dir)
    results, missing = collect_results(run_dir, expect)
    logged = _read_commands(run_dir)
    extra = [] if logged is not None else [{"input": "commands", "what": "the commands of the run",
                                            "reason": f"no {COMMANDS_FILE} in the run folder",
                                            "option": "run the steps through the pipeline (make), which logs them"}]
    metrics = assemble_metrics(run_dir, results, missing, expect, extra)
    commands = list(logged or [])
    for _folder, r in results:
        if r.get("command") and r["command"] not in commands:
            commands.append(r["command"])
    if command:
        commands.append(command)
    named = {os.path.normpath(os.path.join(folder, f["file"])) for folder, r in results for f in r["figures"]}
    others = _other_figures(run_dir, named)
    vers = versions()
    metrics["versions"] = vers
    metrics["figures"] = [f for _, r in results for f in metrics["results"][r["name"]]["figures"]] + others
    page = render_html(run_dir, results, metrics, others, commands, vers, title)
    if os.path.exists(out_metrics):  # written last: its presence marks a finished report
        os.remove(out_metrics)
    atomic_write_text(out_html, page)
    atomic_write_json(out_metrics, metrics, indent=2)
    return metrics
