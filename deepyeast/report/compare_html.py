"""The report of a screen comparison (``OUT/report.html`` of ``analysis/compare_screens.py``).

One page: the counts, the method in plain words, a volcano plot (effect against -log10 p), a
compartment-to-compartment flow table (changed proteins by reference call -> condition call), and
the hits ranked by q, each with its cells in both screens side by side (the gallery strips that
classify_screen.py wrote for the protein, copied to ``gallery/``; keep the folder together).
:func:`write_comparison` writes the whole output folder at once, with ``OUT/result.json`` (a
result manifest, so a run's report shows the comparison when OUT is one of its folders).
"""

import csv
import os
import shutil

import numpy as np

from deepyeast.analysis.compare_screens import METHOD, CompareSettings, compare_screens, read_side, summarise, write_tables
from deepyeast.utils.io import atomic_folder, atomic_write_text

__all__ = ["write_comparison", "run_compare"]

HITS_IN_MANIFEST = 15
"""Hits listed in the result manifest's table (all are in changes.csv)."""


def _copy_gallery(folders, proteins, out_dir, tag):
    """Copy each protein's gallery strip(s) of a classify_screen folder into ``out_dir/gallery``.

    classify_screen writes ``gallery/pNNNNN.png`` for the NNNNN-th row of its proteins.csv.
    Returns protein -> list of relative paths (missing proteins.csv / gallery: empty)."""
    found = {p: [] for p in proteins}
    for r, folder in enumerate(folders):
        table = os.path.join(folder, "proteins.csv")
        if not os.path.exists(table):
            continue
        with open(table, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f)):
                p = (row.get("protein") or "").strip()
                src = os.path.join(folder, "gallery", f"p{i:05d}.png")
                if p in found and os.path.exists(src):
                    rel = os.path.join("gallery", f"{tag}{r}_{len(found[p])}_{_safe(p)}.png")
                    shutil.copyfile(src, os.path.join(out_dir, rel))
                    found[p].append(rel)
    return found


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


def _volcano(path, rows, fdr):
    from deepyeast.utils.plotting import plt

    t = [r for r in rows if r["p"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    x = np.asarray([r["effect"] for r in t])
    y = -np.log10(np.asarray([r["p"] for r in t]))
    ch = np.asarray([bool(r["changed"]) for r in t], bool)
    ax.scatter(x[~ch], y[~ch], s=10, c="#999999", label="not changed")
    ax.scatter(x[ch], y[ch], s=14, c="#c0392b", label=f"changed (q < {fdr:g})")
    ax.set_xlabel("effect: total-variation distance between the screens' profiles")
    ax.set_ylabel("-log10 p")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _report(out_dir, ref, cond, rows, summary, settings):
    from deepyeast.utils.html_page import CSS, escape, html_table

    os.makedirs(os.path.join(out_dir, "figures"))
    os.makedirs(os.path.join(out_dir, "gallery"))
    _volcano(os.path.join(out_dir, "figures", "volcano.png"), rows, settings.fdr)
    hits = sorted((r for r in rows if r["changed"]), key=lambda r: (r["q"], -r["effect"]))
    shown = hits[:settings.hits_shown]
    names = [r["protein"] for r in shown]
    gal_ref = _copy_gallery(ref.folders, names, out_dir, "ref")
    gal_cond = _copy_gallery(cond.folders, names, out_dir, "cond")
    s = summary["proteins"]
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Screen comparison</title>'
             f"<style>{CSS}.pair img{{image-rendering:pixelated;height:128px;display:block;margin:.2em 0}}"
             "</style></head><body><h1>Screen comparison: which proteins change compartment</h1>",
             "<p>Reference: " + ", ".join(f"<code>{escape(f)}</code>" for f in ref.folders)
             + "<br>Condition: " + ", ".join(f"<code>{escape(f)}</code>" for f in cond.folders) + "</p>",
             html_table(["", "count"], [
                 ["proteins in both screens", s["in_both"]], ["tested", s["tested"]],
                 ["insufficient (too few micrographs or cells; see changes.csv)", s["insufficient"]],
                 [f"changed (q < {settings.fdr:g})", s["changed"]],
                 ["changed by the per-cell test (for comparison; not trustworthy)",
                  s["changed_naive_per_cell_test"]],
                 ["cells left out as out-of-distribution (reference, condition)",
                  f"{summary['cells_left_out_ood']['reference']}, {summary['cells_left_out_ood']['condition']}"]]),
             "".join(f'<p class="missing">{escape(w)}</p>' for w in summary["warnings"]),
             '<h2 id="method">Method</h2>', f'<p class="note">{escape(METHOD)}</p>',
             '<h2 id="volcano">Volcano plot</h2><figure><img src="figures/volcano.png" alt="volcano plot">'
             f"<figcaption>Each tested protein: its effect against its p-value; red: changed. p-values are "
             f"multiples of 1/{settings.null_draws + 1} (the null's draws): the top row is that floor.</figcaption>"
             "</figure>",
             '<h2 id="flows">Where proteins moved</h2>']
    flows = summary["flows"]
    parts.append(html_table(["reference call", "condition call", "changed proteins"],
                            [[f["from"], f["to"], f["proteins"]] for f in flows]) if flows
                 else "<p>No protein changed.</p>")
    parts.append(f'<h2 id="hits">Changed proteins ({len(hits)}; {len(shown)} shown, ranked by q)</h2>')
    if not hits:
        parts.append("<p>None at this FDR.</p>")
    for r in shown:
        def strip(paths, label):
            if not paths:
                return f"<p class='caption'>{label}: no gallery in its classify folder</p>"
            return f"<p class='caption'>{label}</p>" + "".join(f'<img src="{escape(p)}" alt="{label}">'
                                                               for p in paths)
        parts.append(
            f'<div class="pair" id="{escape(_safe(r["protein"]))}"><h3>{escape(r["protein"])}: '
            f'{escape(r["ref_call"])} {r["ref_share"]:.2f} → {escape(r["cond_call"])} {r["cond_share"]:.2f}</h3>'
            f'<p>gained {escape(r["gained"])} (+{r["gained_by"]:.2f}), lost {escape(r["lost"])} '
            f'(−{r["lost_by"]:.2f}); effect {r["effect"]:.3f} [{r["effect_lo"]:.3f}, {r["effect_hi"]:.3f}], '
            f'p {r["p"]:.2g}, q {r["q"]:.2g}; {r["ref_cells"]} cells in {r["ref_micrographs"]} micrographs against '
            f'{r["cond_cells"]} in {r["cond_micrographs"]}</p>'
            + strip(gal_ref[r["protein"]], "reference") + strip(gal_cond[r["protein"]], "condition") + "</div>")
    parts.append("</body></html>\n")
    atomic_write_text(os.path.join(out_dir, "report.html"), "\n".join(parts))


def _manifest(out_dir, rows, summary, settings, command):
    from deepyeast.utils.manifest import Result, figure, table, write_result

    s = summary["proteins"]
    hits = sorted((r for r in rows if r["changed"]), key=lambda r: (r["q"], -r["effect"]))[:HITS_IN_MANIFEST]
    text = (f"Two classified screens compared protein by protein ({s['in_both']} proteins in both, {s['tested']} "
            f"with enough micrographs and cells to test): {s['changed']} changed compartment at q < "
            f"{settings.fdr:g}. A per-cell test would have called {s['changed_naive_per_cell_test']}. " + METHOD)
    write_result(out_dir, Result("compare", "Comparing two screens", text,
                 metrics={"proteins_tested": s["tested"], "proteins_changed": s["changed"],
                          "proteins_changed_per_cell_test": s["changed_naive_per_cell_test"]},
                 figures=[figure("figures/volcano.png", "Each tested protein's effect (total-variation distance "
                                                        "between its profiles) against -log10 p; red: changed.")],
                 tables=[table("Where proteins moved", ["reference call", "condition call", "proteins"],
                               [[f["from"], f["to"], f["proteins"]] for f in summary["flows"]]),
                         table("Strongest changes", ["protein", "from", "to", "effect", "q"],
                               [[r["protein"], r["ref_call"], r["cond_call"], round(r["effect"], 3),
                                 float(f"{r['q']:.2g}")] for r in hits],
                               "Ranked by q; the page with each hit's cells side by side is report.html.",
                               file="changes.csv")],
                 links=[{"file": "report.html", "text": "The comparison's own page: every hit's cells in both "
                                                        "screens"}],
                 details={k: summary[k] for k in ("proteins", "cells", "cells_left_out_ood", "null", "settings")},
                 seeds={"seed": settings.seed}, command=command, order=80))


def write_comparison(out_dir, ref, cond, rows, info, settings, command=None):
    """Write ``out_dir`` (replaced as a whole, atomically): changes.csv, summary.json, report.html
    (+ figures/, gallery/), result.json.  Returns the summary dict."""
    summary = summarise(ref, cond, rows, info, settings, command)
    with atomic_folder(out_dir) as tmp:
        write_tables(tmp, rows, summary)
        _report(tmp, ref, cond, rows, summary, settings)
        _manifest(tmp, rows, summary, settings, command)
    return summary


def run_compare(reference, condition, out_dir, settings=CompareSettings(), command=None):
    """Read both sides (lists of folders), compare, write ``out_dir``; returns the summary.

    Every input check runs before anything is written (an output folder that is, holds or lies in an
    input folder is refused by the launcher's output policy, :func:`deepyeast.utils.io.check_replaceable`)."""
    settings.check()
    ref = read_side(reference)
    cond = read_side(condition, rep_offset=len(reference))
    rows, info = compare_screens(ref, cond, settings)
    return write_comparison(out_dir, ref, cond, rows, info, settings, command)
