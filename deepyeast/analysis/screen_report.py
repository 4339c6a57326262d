"""The report of a classified screen (``OUT/report.html`` of ``analysis/classify_screen.py``).

One page for a biologist checking the calls of a new screen:

1. what was classified with which model, and what went wrong (rows skipped, micrographs
   without cells, proteins without cells);
2. the screen summary: proteins per called compartment (with the flags), cells per protein
   (table and figure), and the bf16-vs-fp32 check when it was run;
3. where the images table gave labels, the per-cell accuracy (bootstrap interval, kappa) and
   the per-protein accuracy, as in the main report, and per compartment;
4. the proteins to check (flagged calls), linked to their galleries;
5. per plate, heat maps of cells per well and of flagged cells per well (out of distribution,
   or in a micrograph that QC flags), and segmentation outlines drawn over a sample of
   micrographs, the most suspicious by each QC measure first;
6. per compartment, per protein: its call, runner-up, shares, flags and a strip of its cells,
   sorted by each cell's probability of the protein's call (cells that agree first, with a
   green frame; cells called otherwise last, orange), so a glance tells whether the cells
   look like the call.  A protein with more cells than fit shows an evenly spaced sample
   of that order (the most and the least supportive cell always among them).

The page references ``figures/*.png`` and ``gallery/*.png`` next to it (one strip per
protein: a screen of thousands of proteins would not fit one self-contained page); keep the
folder together.
"""

import datetime
import os

import numpy as np

from deepyeast import __version__
from deepyeast.utils.html_page import CSS, Raw, escape, format_count, html_table

__all__ = ["write_screen_report", "gallery_order", "render_strip"]

THUMB = 2
"""Display scale of the 64 px crops (nearest neighbour)."""
AGREE = (26, 127, 55)      # RGB of the frame of a cell called as its protein
DISAGREE = (217, 115, 26)  # ... called otherwise
CHECK_ROWS = 200
"""Rows of the 'proteins to check' table (all flagged proteins are in proteins.csv)."""

_SCREEN_CSS = """
.protein{margin:1.2em 0 1.6em 0}.protein .head{margin-bottom:.3em}
.strip{display:grid;gap:0;justify-content:start}.strip img{grid-row:1;image-rendering:pixelated;
border:0;display:block}.cap{font-size:.72em;line-height:1.15;padding:.15em .2em 0 .1em;overflow-wrap:anywhere}
.cap.agree{color:#1a7f37}.cap.disagree{color:#b3540f}.flag{display:inline-block;font-size:.75em;padding:0 .4em;
margin-left:.3em;border-radius:.6em;background:#fde7c8;color:#7a3d00}.flag.ok{background:#dff3e4;color:#1a5f2f}
.flag.wrong{background:#fbd5d5;color:#8a1c1c}.muted{color:#666}
"""

FLAG_TEXT = {"few_cells": "few cells", "low_confidence": "low confidence", "possible_dual": "possible dual",
             "no_cells": "no cells"}


def _name(protein, plate):
    return f"plate {int(plate)} · {protein}" if plate >= 0 else str(protein)


def gallery_order(probs, call):
    """Cell order of a protein's gallery: by probability of the protein's ``call``, highest first.

    ``probs`` float (n, K) of the protein's cells.  Returns int indices (n,) (stable).
    """
    return np.argsort(-np.asarray(probs)[:, call], kind="stable")


def _sample(order, n):
    if len(order) <= n:
        return order
    return order[np.unique(np.round(np.linspace(0, len(order) - 1, n)).astype(int))]


def render_strip(crops, agree):
    """uint8 RGB strip (64 x 64n x 3) of crops (n x 2 x 64 x 64): red marker, green protein, each
    channel stretched to its maximum, a 2 px frame green where ``agree`` else orange."""
    from deepyeast.utils.plotting import crop_rgb

    tiles = []
    for crop, ok in zip(crops, agree):
        tile = (crop_rgb(crop, marker_gain=0.8) * 255).round().astype(np.uint8)
        tile[:2], tile[-2:], tile[:, :2], tile[:, -2:] = (AGREE if ok else DISAGREE,) * 4
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def _write_png(path, rgb):
    from deepyeast.data.crop_png import quiet_cv2

    cv2 = quiet_cv2()
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with open(path, "wb") as f:
        f.write(data.tobytes())


def _summary_figure(out_dir, calls, classes, min_cells):
    from deepyeast.utils.plotting import NETWORK_COLOR, plt, save_figure

    has = calls.n_cells > 0
    per = np.bincount(calls.pred[has], minlength=len(classes))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.25, 1]})
    y = np.arange(len(classes))[::-1]
    a.barh(y, per, color=NETWORK_COLOR)
    a.set_yticks(y, classes, fontsize=8)
    a.set_xlabel("proteins called")
    a.set_title("Proteins per called compartment", fontsize=10)
    n = calls.n_cells[has]
    if n.size:
        bins = np.unique(np.round(np.geomspace(1, max(2, n.max() + 1), 25)).astype(int))
        b.hist(n, bins=bins, color=NETWORK_COLOR)
        b.set_xscale("log")
    b.axvline(min_cells, color="#b42318", linestyle="--", linewidth=1, label=f"{min_cells} cells")
    b.legend(fontsize=8, frameon=False)
    b.set_xlabel("cells per protein")
    b.set_ylabel("proteins")
    b.set_title("Cells per protein", fontsize=10)
    fig.tight_layout()
    rel = os.path.join("figures", "screen_summary.png")
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    save_figure(fig, os.path.join(out_dir, rel), dpi=110, formats=("png",))
    return rel


def _flags_html(calls, i):
    out = [f'<span class="flag">{escape(FLAG_TEXT[k])}</span>' for k in FLAG_TEXT if calls.flags[k][i]]
    return "".join(out)


def _truth_html(calls, i, classes):
    lab = int(calls.label[i])
    if lab < 0:
        return ""
    if calls.n_cells[i] == 0:
        return f' <span class="muted">label: {escape(classes[lab])}</span>'
    ok = calls.pred[i] == lab
    return (f' <span class="flag {"ok" if ok else "wrong"}">label: {escape(classes[lab])} — '
            f'{"right" if ok else "wrong"}</span>')


def _protein_block(out_dir, i, calls, cells, rows_of, classes, gallery_cells):
    f = calls.flags
    call = int(calls.pred[i])
    rows = rows_of[i]
    order = rows[gallery_order(cells.probs[rows], call)]
    shown = _sample(order, gallery_cells)
    agree = cells.pred[shown] == call
    rel = os.path.join("gallery", f"p{i:05d}.png")
    _write_png(os.path.join(out_dir, rel), render_strip(cells.read_crops(shown), agree))
    size = cells.crop_shape[-1] * THUMB
    head = (f"<b>{escape(_name(calls.protein[i], calls.plate[i]))}</b>: <b>{escape(classes[call])}</b> "
            f"{f['top1_share'][i]:.2f}; runner-up {escape(classes[f['top2'][i]])} {f['top2_share'][i]:.2f}; "
            f"P(call leads) {f['p_call'][i]:.3f}; {int(calls.n_cells[i])} cells in {int(calls.n_images[i])} "
            f"micrograph{'s' if calls.n_images[i] != 1 else ''}"
            + (f", {len(shown)} shown" if len(shown) < len(rows) else "")
            + _flags_html(calls, i) + _truth_html(calls, i, classes))
    caps = []
    for j, r in enumerate(shown):
        p = int(cells.pred[r])
        caps.append(f'<div class="cap {"agree" if p == call else "disagree"}" style="grid-column:{j + 1}">'
                    f"{escape(classes[p])} {cells.probs[r, p]:.2f}</div>")
    return (f'<div class="protein" id="p{i}"><div class="head">{head}</div>'
            f'<div class="strip" style="grid-template-columns:repeat({len(shown)},{size}px)">'
            f'<img src="{escape(rel)}" alt="cells of {escape(_name(calls.protein[i], calls.plate[i]))}" '
            f'style="grid-column:1/-1;width:{size * len(shown)}px;height:{size}px">'
            + "".join(caps) + "</div></div>")


def _accuracy_section(acc, classes):
    parts = ["<h2>Accuracy against the labels in the images table</h2>",
             f"<p>{acc['labelled_cells']:,} cells of labelled micrographs"
             + (f" ({acc['unlabelled_cells']:,} cells had no label)" if acc["unlabelled_cells"] else "") + ".</p>"]
    rows = [["per cell", Raw(format_count(acc["cell_accuracy"], "cells")), f"{acc['cell_kappa']:.3f}"],
            ["per protein", Raw(format_count(acc["protein_accuracy"], "proteins")), "—"],
            [f"per protein, ≥ {acc['min_cells']} cells", Raw(format_count(acc["protein_accuracy_min10"], "proteins")),
             "—"]]
    parts.append(html_table(["accuracy", "value (right/total) [95% interval]", "Cohen's kappa"], rows))
    parts.append('<p class="caption">Per cell: a cell is right when its most probable compartment is its '
                 "micrograph's label; the interval is a stratified bootstrap over cells "
                 f"({acc['n_resamples']:,} resamples). Per protein: the Dirichlet call (the paper's) against the "
                 "label, over labelled proteins with cells.</p>")
    per = [[classes[r["class"]], r["cells"], r["right"], r["proteins"], r["proteins_right"]]
           for r in acc["per_class"] if r["cells"] or r["proteins"]]
    parts.append(html_table(["labelled compartment", "cells", "cells right", "proteins", "proteins right"], per))
    return "\n".join(parts)


QC_SHOWN = 5
"""Micrographs listed per QC measure in the report (the most suspicious first)."""


def _qc_section(cells):
    """The micrographs' QC: per measure (:mod:`deepyeast.analysis.qc`) its median over the screen and the
    ``QC_SHOWN`` most suspicious micrographs (fewest cells, least focus, most saturation, brightest background)."""
    from deepyeast.analysis.qc import QC_COLUMNS, worst_first

    images = [im for im in cells.images if im.get("qc")]
    if not images:
        return ""
    rows = []
    for measure in QC_COLUMNS:
        values = np.array([im["qc"][measure] for im in images], float)
        worst = worst_first(values, measure)[:QC_SHOWN]
        flagged = sum(measure in im.get("qc_flags", "").split(";") for im in images)
        rows.append([measure, f"{np.nanmedian(values):.4g}", flagged,
                     Raw("; ".join(f"<code>{escape(images[i]['where'])}</code> {values[i]:.4g}" for i in worst))])
    return ('<h2 id="qc">Micrograph quality</h2><p class="note">Per micrograph in images.csv: cells found, focus '
            "(variance of the marker's Laplacian), saturated share (pixels at 255), background (median grey "
            "outside the cells, per channel). The most suspicious micrographs by each measure first. Flagged "
            "(images.csv qc_flags): no cells, a saturated share above 1%, or far from the screen's median on the "
            "suspicious side (summary.json qc.rule).</p>"
            + html_table(["measure", "screen median", "micrographs flagged", "most suspicious micrographs"], rows))


def _plate_figure(out_dir, plate_map):
    """``figures/plate_<plate>.png``: two heat maps of one plate, cells per well and flagged cells per well
    (:func:`deepyeast.analysis.qc.plate_maps`); wells without a micrograph grey.  Returns the relative path."""
    from deepyeast.utils.plotting import plt, save_figure

    rows, cols = plate_map["shape"]
    fig, axes = plt.subplots(1, 2, figsize=(min(4 + 0.42 * cols, 22) * 2 / 1.6, 1.2 + 0.36 * rows + 0.6))
    small = rows * cols <= 96
    for ax, key, title, cmap in ((axes[0], "cells", "cells per well", "viridis"),
                                 (axes[1], "flagged", "flagged cells per well (OOD or QC)",
                                  "magma_r")):
        grid = np.ma.masked_invalid(plate_map[key])
        colormap = plt.get_cmap(cmap).copy()
        colormap.set_bad("#d9d9d9")
        top = max(1.0, float(np.nanmax(plate_map[key]))) if np.isfinite(plate_map[key]).any() else 1.0
        im = ax.imshow(grid, cmap=colormap, vmin=0, vmax=top, aspect="equal")
        ax.set_xticks(range(cols), [str(c + 1) for c in range(cols)], fontsize=6 if cols > 12 else 8)
        ax.set_yticks(range(rows), [_row_name(r) for r in range(rows)], fontsize=6 if rows > 8 else 8)
        ax.tick_params(length=0)
        ax.set_title(title, fontsize=9)
        if small:
            for (r, c), v in np.ndenumerate(plate_map[key]):
                if np.isfinite(v):
                    ax.text(c, r, f"{int(v)}", ha="center", va="center", fontsize=7,
                            color="white" if (v / top > 0.5) != (cmap == "viridis") else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    name = "screen" if plate_map["plate"] is None else f"{int(plate_map['plate']):02d}"
    fig.suptitle(f"plate {plate_map['plate']}" if plate_map["plate"] is not None else "plate (unnumbered)",
                 fontsize=10)
    fig.tight_layout()
    rel = os.path.join("figures", f"plate_{name}.png")
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    save_figure(fig, os.path.join(out_dir, rel), dpi=100, formats=("png",))
    return rel


def _row_name(r):
    """0 -> A, 25 -> Z, 26 -> AA (plate row letters)."""
    name = ""
    r += 1
    while r:
        r, k = divmod(r - 1, 26)
        name = chr(ord("A") + k) + name
    return name


PLATES_DRAWN = 24
"""Plates drawn as heat maps in the report (the first by number; every well is in images.csv)."""


def _plates_section(out_dir, cells):
    """Per plate, heat maps of cells and flagged cells per well, or a line saying why there are none."""
    from deepyeast.analysis.classify_screen import flagged_per_image
    from deepyeast.analysis.qc import plate_maps

    maps = plate_maps(cells.images, flagged_per_image(cells)) if cells.images else []
    head = ('<h2 id="plates">Plates</h2><p class="note">Per plate: cells found per well, and flagged cells per '
            "well (cells out of distribution, and every cell of a micrograph that QC flags: images.csv "
            "qc_flags, n_ood). Grey: no micrograph of that well. A well with few cells or many flagged cells "
            "points at a pipetting, growth, focus or segmentation problem there.</p>")
    if not maps:
        return head + ("<p>No well is named in the input, so there is no plate map (a well column in the images "
                       "table, {well} in a filename pattern, or an OME-Zarr plate names them).</p>")
    parts = [head]
    for m in maps[:PLATES_DRAWN]:
        if m["shape"] == (0, 0):
            parts.append(f"<p>Plate {m['plate']}: no well name reads as a row letter and column number "
                         f"({escape(', '.join(m['unplaced'][:10]))}).</p>")
            continue
        rel = _plate_figure(out_dir, m)
        cap = (f"{int(np.isfinite(m['cells']).sum())} wells imaged, {int(np.nansum(m['cells'])):,} cells, "
               f"{int(np.nansum(m['flagged'])):,} flagged")
        if m["unplaced"]:
            cap += f"; wells not on the grid: {', '.join(m['unplaced'][:10])}"
        parts.append(f'<figure class="plate" data-file="{escape(rel)}"><img alt="plate {escape(str(m["plate"]))} '
                     f'heat maps" src="{escape(rel)}"><figcaption>{escape(cap)}.</figcaption></figure>')
    if len(maps) > PLATES_DRAWN:
        parts.append(f"<p>The first {PLATES_DRAWN} of {len(maps)} plates are drawn; every well is in images.csv.</p>")
    return "\n".join(parts)


OUTLINE_SIDE = 640
"""Longest side (pixels) of a micrograph drawn with its outlines (larger ones are shrunk by a whole factor)."""
OUTLINE_COLOR = (255, 255, 255)


def render_outlines(micrograph, mask, side=OUTLINE_SIDE):
    """uint8 RGB ``h x w x 3`` of a micrograph (red marker, green protein, each stretched to its 99.5th
    percentile) with each cell's outline (mask pixels next to another label) in white.

    ``micrograph``: uint8 2 x H x W; ``mask``: int H x W (0 = background).  Shrunk by the smallest whole
    factor that brings the longer side to at most ``side`` (mean of the pixels; the mask's nearest label)."""
    micro = np.asarray(micrograph, np.float32)
    mask = np.asarray(mask)
    f = max(1, int(np.ceil(max(mask.shape) / side)))
    h, w = (mask.shape[0] // f) * f, (mask.shape[1] // f) * f
    small = micro[:, :h, :w].reshape(2, h // f, f, w // f, f).mean(axis=(2, 4))
    labels = mask[:h:f, :w:f]
    rgb = np.zeros(labels.shape + (3,), np.float32)
    for c in (0, 1):
        top = max(1.0, float(np.percentile(small[c], 99.5)))
        rgb[..., c] = np.clip(small[c] / top, 0, 1) * 255
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge &= labels > 0
    rgb[edge] = OUTLINE_COLOR
    return rgb.round().astype(np.uint8)


def _outlines_section(out_dir, outlines):
    """Segmentation outlines over the sample of micrographs (the worst by each QC measure first)."""
    if not outlines:
        return ""
    parts = ['<h2 id="outlines">Segmentation outlines</h2><p class="note">The micrographs a check should start '
             "with: the most suspicious by each QC measure in turn (fewest cells, least focus, most saturation, "
             "brightest backgrounds), drawn with the outline of every cell found (white; red: marker, green: "
             "protein). Check that the outlines follow the cells before trusting the calls.</p>"]
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    for k, o in enumerate(outlines):
        rel = os.path.join("figures", f"outline_{k:02d}.png")
        rgb = render_outlines(o["micrograph"], o["mask"])
        _write_png(os.path.join(out_dir, rel), rgb)
        q = o["qc"]
        cap = (f"{o['where']} ({o['image']}): picked by {o['measure']}; {int(q['n_cells'])} cells, focus "
               f"{q['focus']:.4g}, saturated {q['saturated']:.3g}, backgrounds {q['background_marker']:.3g} / "
               f"{q['background_protein']:.3g}" + (f"; QC flags: {o['qc_flags']}" if o["qc_flags"] else ""))
        parts.append(f'<figure class="outline" id="outline{k}"><img alt="outlines of {escape(o["where"])}" '
                     f'src="{escape(rel)}" width="{rgb.shape[1]}" height="{rgb.shape[0]}">'
                     f"<figcaption>{escape(cap)}</figcaption></figure>")
    return "\n".join(parts)


def write_screen_report(out_dir, bundle, cells, calls, summary, gallery_cells=8, outlines=()):
    """Write ``out_dir/report.html`` with ``out_dir/figures/`` and ``out_dir/gallery/`` (see the module doc).

    ``cells``, ``calls``: :class:`deepyeast.analysis.classify_screen.ScreenCells` and
    :class:`~deepyeast.analysis.classify_screen.ScreenCalls`; ``summary``: the step's summary dict; ``outlines``:
    micrographs with masks to draw (:func:`deepyeast.analysis.classify_screen.outline_micrographs`).
    """
    classes = list(bundle.classes)
    has = calls.n_cells > 0
    f = calls.flags
    index = {k: i for i, k in enumerate(calls.key)}
    rows_of = [[] for _ in calls.key]
    for r, k in enumerate(cells.key):
        rows_of[index[k]].append(r)
    rows_of = [np.asarray(r, np.int64) for r in rows_of]
    os.makedirs(os.path.join(out_dir, "gallery"), exist_ok=True)
    fig = _summary_figure(out_dir, calls, classes, summary["settings"]["min_cells"])
    s = summary
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"DeepYeast screen classification: {os.path.basename(s['images_table'])}"
    training = s["model"].get("training") or {}
    metrics = s["model"].get("metrics") or {}
    model_bits = [f"<b>{escape(bundle.name or 'model')}</b> (<code>{escape(bundle.path)}</code>): "
                  f"{len(classes)} compartments, input {' × '.join(map(str, bundle.input_shape))}"]
    if training.get("data"):
        model_bits.append(f"trained on {escape(training['data'])}")
    if isinstance(metrics.get("cell_accuracy"), dict):
        model_bits.append(f"its own test accuracy per cell {format_count(metrics['cell_accuracy'], 'cells')}")
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
             f"<style>{CSS}{_SCREEN_CSS}</style></head><body>", f"<h1>{escape(title)}</h1>",
             (f"<p>Micrographs of <code>{escape(s['images_table'])}</code> named by the pattern "
              f"<code>{escape(s['images_pattern'])}</code>; model " if s.get("images_pattern") else
              f"<p>Images table <code>{escape(s['images_table'])}</code>; model ") + "; ".join(model_bits)
             + f". Generated {escape(now)} by deepyeast {escape(__version__)}.</p>"]
    ood = s.get("ood") or {}
    if ood.get("warning"):
        parts.append('<div class="missing" id="ood-warning"><b>Many cells look unlike the training cells.</b> '
                     f"{escape(ood['warning'])}. Likely causes:<ul>"
                     + "".join(f"<li>{escape(c)}</li>" for c in ood["likely_causes"])
                     + "</ul>Flagged cells are left out of the protein calls (proteins.csv n_ood).</div>")
    problems = []
    if s["rejected"]:
        problems.append(f"{len(s['rejected'])} row(s) of the images table were skipped (rejects.txt): "
                        + "".join(f"<br><code>{escape(r['where'])}</code>: {escape(r['reason'])}"
                                  for r in s["rejected"][:20]))
    if s["images_without_cells"]:
        problems.append(f"{len(s['images_without_cells'])} micrograph(s) without a cell found: "
                        + ", ".join(f"<code>{escape(w)}</code>" for w in s["images_without_cells"][:50]))
    if s["proteins_without_cells"]:
        problems.append(f"{len(s['proteins_without_cells'])} protein(s) without cells (no call): "
                        + ", ".join(escape(p) for p in s["proteins_without_cells"][:50]))
    if problems:
        parts.append('<div class="missing" id="problems"><b>Check these first.</b><ul>'
                     + "".join(f"<li>{p}</li>" for p in problems) + "</ul></div>")

    # ---- summary
    parts.append('<h2 id="summary">Screen summary</h2>')
    parts.append(html_table(["", "count"], [
        ["micrographs read", s["n_images"]], ["… segmented here", s["n_segmented"]],
        ["… with a mask given in the table", s["n_given_masks"]], ["cells", s["n_cells"]],
        ["cells whose crop reached past the image edge (zero-padded)", s["n_padded"]],
        ["proteins", s["n_proteins"]], ["proteins called (with cells)", s["n_proteins_called"]],
        ["cells flagged out of distribution (left out of the calls)",
         f"{ood['n_flagged']} ({100 * ood['share']:.1f}%; training {100 * ood['training_share']:.1f}%)"
         if ood.get("available") else "check not available (the bundle has no statistics)"]]))
    if ood.get("available") and ood.get("temperature"):
        parts.append(f'<p class="note" id="calibration">Out-of-distribution score: {escape(str(ood["score"]))}; '
                     f"flag above {ood['threshold']:.4g}. The model's temperature fitted on its validation cells "
                     f"is {ood['temperature']:.3g} (expected calibration error {ood['ece_before']:.3f} before, "
                     f"{ood['ece_after']:.3f} after; the probabilities here are the network's, T = 1).</p>")
    comp_rows = []
    for j, name in enumerate(classes):
        sel = has & (calls.pred == j)
        comp_rows.append([Raw(f'<a href="#c{j}">{escape(name)}</a>') if sel.any() else name, int(sel.sum()),
                          int(np.sum(calls.n_cells[sel])), int(np.sum(f["few_cells"][sel])),
                          int(np.sum(f["low_confidence"][sel])), int(np.sum(f["possible_dual"][sel]))])
    parts.append("<h3>Proteins per called compartment</h3>")
    parts.append(html_table(["compartment", "proteins", "their cells", "few cells", "low confidence",
                             "possible dual"], comp_rows))
    d = s["flag_definitions"]
    parts.append('<p class="caption">A protein is a (plate, protein) pair of the images table; its call is the '
                 "most probable compartment under the paper's Dirichlet posterior (uniform prior, its cells' "
                 f"probabilities as soft counts). Flags: few cells = {escape(d['few_cells'])}; low confidence = "
                 f"{escape(d['low_confidence'])}; possible dual = {escape(d['possible_dual'])}.</p>")
    cps = s["cells_per_protein"]
    if cps:
        parts.append(f"<p>Cells per protein: median {cps['median']:g}, from {cps['min']} to {cps['max']}; "
                     f"{s['flags']['few_cells'] - s['flags']['no_cells']} protein(s) with fewer than "
                     f"{s['settings']['min_cells']}.</p>")
    parts.append(f'<figure data-file="{escape(fig)}"><img alt="screen summary" src="{escape(fig)}">'
                 "<figcaption>Left: proteins per called compartment. Right: cells per protein (log scale)."
                 "</figcaption></figure>")
    pc = s.get("precision_check")
    if pc:
        parts.append(f'<p class="note" id="precision-check">Precision check: with {escape(pc["precision"])} '
                     f"arithmetic {pc['cells_changed']:,} of {pc['cells']:,} cell calls and "
                     f"{pc['proteins_changed']} of {pc['proteins']} protein calls differ from fp32 (largest "
                     f"probability difference {pc['max_abs_prob_difference']:.3g}).</p>")
    if s.get("accuracy"):
        parts.append(_accuracy_section(s["accuracy"], classes))
    parts.append(_qc_section(cells))
    parts.append(_plates_section(out_dir, cells))
    parts.append(_outlines_section(out_dir, outlines))

    # ---- proteins to check
    flagged = np.flatnonzero(has & (f["low_confidence"] | f["possible_dual"] | f["few_cells"]))
    flagged = flagged[np.lexsort((calls.n_cells[flagged], f["p_call"][flagged]))]
    parts.append('<h2 id="check">Proteins to check</h2>')
    if flagged.size:
        rows = [[Raw(f'<a href="#p{i}">{escape(_name(calls.protein[i], calls.plate[i]))}</a>'),
                 classes[calls.pred[i]], f"{f['top1_share'][i]:.2f}", classes[f["top2"][i]],
                 f"{f['top2_share'][i]:.2f}", f"{f['p_call'][i]:.3f}", int(calls.n_cells[i]),
                 ", ".join(FLAG_TEXT[k] for k in ("few_cells", "low_confidence", "possible_dual") if f[k][i])]
                for i in flagged[:CHECK_ROWS]]
        parts.append(html_table(["protein", "call", "share", "runner-up", "share", "P(call leads)", "cells",
                                 "flags"], rows))
        more = f" The first {CHECK_ROWS} of {flagged.size} are listed;" if flagged.size > CHECK_ROWS else ""
        parts.append(f'<p class="caption">Least certain first (P(call leads) ascending).{more} Every flag is a '
                     "column of proteins.csv.</p>")
    else:
        parts.append("<p>No protein call is flagged.</p>")

    # ---- galleries
    parts.append('<h2 id="proteins">Proteins and their cells, by called compartment</h2>')
    parts.append('<p class="caption">Each strip shows a protein\'s cells (red: marker, green: protein) ordered by '
                 "their probability of the protein's call: green frame and caption = the cell is called as the "
                 f"protein, orange = called otherwise. Up to {gallery_cells} cells per protein; with more, an "
                 "evenly spaced sample of that order. Within a compartment, proteins with the clearest call come "
                 "first.</p>")
    for j, name in enumerate(classes):
        members = np.flatnonzero(has & (calls.pred == j))
        if not members.size:
            continue
        members = members[np.argsort(-f["top1_share"][members], kind="stable")]
        parts.append(f'<h3 id="c{j}">{escape(name)} ({members.size} protein{"s" if members.size != 1 else ""})'
                     "</h3>")
        for i in members:
            parts.append(_protein_block(out_dir, i, calls, cells, rows_of, classes, gallery_cells))
    if (~has).any():
        parts.append('<h2 id="no-cells">Proteins without cells</h2><p>'
                     + ", ".join(escape(_name(calls.protein[i], calls.plate[i])) + _truth_html(calls, i, classes)
                                 for i in np.flatnonzero(~has)) + "</p>")
    parts.append("<h2>Settings</h2><details><summary>Settings and command</summary><pre>"
                 + escape("\n".join(f"{k}: {v}" for k, v in s["settings"].items()))
                 + ("\n\n" + escape(s["command"]) if s.get("command") else "") + "</pre></details>")
    parts.append("</body></html>\n")
    with open(os.path.join(out_dir, "report.html"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))
    return os.path.join(out_dir, "report.html")
