"""Writing a synthetic screen: render every protein's fields, crop them like real micrographs
(:func:`deepyeast.data.crop_cells.crop_cells`), write two archive roots in the published layout.
"""

import math
import os
from multiprocessing import get_context

import numpy as np

from deepyeast.constants import (
    CLASS_NAMES,
    CLASS_SETS,
    IMAGE_SIZE,
    NONCELL_LIST,
    PAPER_N_NONCELLS,
    SPLITS,
    TRANSFER_CLASS_NAMES,
    list_file,
    list_prefix,
)
from deepyeast.data.crop_png import write_crop
from deepyeast.data.lists import MIXED_SPLIT, MIXED_TABLE, write_class_doc, write_mixed_table, write_split_list
from deepyeast.data.crop_cells import crop_cells, crop_name
from deepyeast.data.make_synthetic.patterns import _protein_style
from deepyeast.data.make_synthetic.plan import CELLS_PER_FULL_FIELD, FIELD_SIZE, plan_screen
from deepyeast.data.make_synthetic.render import field_size_for, render_field
from deepyeast.utils.io import atomic_folder, atomic_write_json, atomic_write_text
from deepyeast.utils.progress import progress


def _render_protein(job):
    """Worker: render all fields of one protein, crop them, write PNGs; returns crop rows."""
    protein, root, field_size, save_dir = job
    import cv2
    cv2.setNumThreads(1)
    rng = np.random.default_rng(protein["seed"])
    names = CLASS_NAMES if protein["set"] == "main" else TRANSFER_CLASS_NAMES
    protein = dict(protein, _style=_protein_style(names[protein["label"]], rng))
    if protein.get("mixed_with") is not None:
        protein["_style_b"] = _protein_style(names[protein["mixed_with"]], rng)
    n = protein["n_cells"]
    per_field = int(rng.integers(CELLS_PER_FULL_FIELD[0], CELLS_PER_FULL_FIELD[1] + 1))
    n_fields = max(1, math.ceil(n / per_field))
    counts = [n // n_fields + (1 if i < n % n_fields else 0) for i in range(n_fields)]
    rows, fields = [], []
    for field, count in enumerate(counts):
        rows_before = len(rows)
        side = field_size_for(count, field_size)
        image, centres, mask = render_field(rng, protein, count, side)
        pts = np.array([(y, x) for y, x, _, _ in centres], float).reshape(-1, 2)
        crops, kept, padded = crop_cells(image, pts, IMAGE_SIZE, "pad")
        for k, (crop, i, pad) in enumerate(zip(crops, kept, padded)):
            rel = crop_name(protein["plate"], protein["well"], field, i + 1, k)
            write_crop(root, rel, crop)
            rows.append((rel, centres[i][2], centres[i][3], bool(pad)))
        if save_dir is not None:
            base = f"plate{protein['plate']:02d}_{protein['well']}_f{field}"
            import tifffile
            tifffile.imwrite(os.path.join(save_dir, base + ".tif"), image, photometric="minisblack")
            # the true label mask (cell k = k-th rendered cell, as in centres.csv), for segmentation benchmarks
            tifffile.imwrite(os.path.join(save_dir, base + "_truth.tif"), mask, photometric="minisblack",
                             compression="zlib")
            fields.append((base + ".tif", [(i + 1, y, x, q) for i, (y, x, q, _) in enumerate(centres)],
                           rows[rows_before:]))
    return protein["protein"], rows, fields




def _write_screen_root(root, proteins, set_name, field_size, jobs, save_fields, progress):
    names = CLASS_SETS[set_name]
    prefix = list_prefix(set_name)
    mine = [p for p in proteins if p["set"] == set_name]
    save_dir = None
    if save_fields:
        save_dir = os.path.join(root, "fields")
        os.makedirs(save_dir, exist_ok=True)
    # fields kept for crop_cells.py: the first proteins of a split (a mixed protein has none to give)
    keep = {p["protein"] for p in [q for q in mine if q["split"] in SPLITS][:save_fields]}
    tasks = [(p, root, field_size, save_dir if p["protein"] in keep else None) for p in mine]
    by_protein = {}
    saved = []
    if jobs > 1 and len(tasks) > 1:
        # fork, not forkserver/spawn: after rpy2 is imported (the tests) the environment carries R's
        # LD_LIBRARY_PATH, under which a freshly started python may load the system's libpython
        # instead of its own.  A fork of a process whose OpenCV/scipy thread pools hold locks can
        # hang, hence jobs=1 from such a process.
        with get_context("fork").Pool(jobs) as pool:
            for pid, rows, fields in _progress(pool.imap(_render_protein, tasks, chunksize=2), len(tasks), progress,
                                               set_name):
                by_protein[pid] = rows
                saved.extend((pid, f) for f in fields)
    else:
        for pid, rows, fields in _progress(map(_render_protein, tasks), len(tasks), progress, set_name):
            by_protein[pid] = rows
            saved.extend((pid, f) for f in fields)
    lists = {s: [] for s in SPLITS + (MIXED_SPLIT,)}
    quality = []
    for p in mine:
        for rel, is_cell, kind, _ in by_protein[p["protein"]]:
            lists[p["split"]].append((rel, p["label"]))
            quality.append((rel, is_cell, kind))
    for s in SPLITS:
        write_split_list(os.path.join(root, f"{prefix}{s}.txt"), lists[s])
    write_class_doc(os.path.join(root, f"{prefix}doc.txt"), names)
    mixed = [p for p in mine if p["split"] == MIXED_SPLIT]
    if mixed:  # held out of every split list, both compartments named (the paper's dual-localised proteins)
        write_mixed_table(os.path.join(root, MIXED_TABLE),
                          [dict(protein=p["protein"], classes=(p["label"], p["mixed_with"]),
                                fraction=p["mixture_fraction"], n_cells=len(by_protein[p["protein"]])) for p in mixed],
                          names)
    atomic_write_text(os.path.join(root, "cell_quality.csv"),
                      "path,is_cell,kind\n" + "".join(f"{r},{q},{k}\n" for r, q, k in quality))
    lines = ["protein,split,label,class,mixture_classes,mixture_fraction,expression,dim,n_cells"]
    for p in mine:
        mix = p["mixture_fraction"]
        pair = f"{names[p['label']]}+{names[p['mixed_with']]}" if p.get("mixed_with") is not None else ""
        lines.append(",".join([p["protein"], p["split"], str(p["label"]), names[p["label"]],
                               pair, f"{mix:.3f}" if mix is not None else "",
                               f"{p['expression']:.1f}", str(int(p["dim"])), str(len(by_protein[p["protein"]]))]))
    atomic_write_text(os.path.join(root, "proteins.csv"), "\n".join(lines) + "\n")
    if save_dir is not None:
        _write_field_tables(save_dir, saved, {p["protein"]: p for p in mine}, names)
    n_padded = sum(r[3] for rows in by_protein.values() for r in rows)
    return {"n_crops": len(quality), "n_noncells": sum(1 for q in quality if q[1] == 0), "n_padded": int(n_padded),
            "n_proteins": len(mine) - len(mixed), "n_mixed_proteins": len(mixed),
            "per_split": {s: len(v) for s, v in lists.items() if v or s in SPLITS}}


def _write_field_tables(save_dir, saved, proteins, names):
    """images.csv + centres.csv for saved fields, so crop_cells.py can redo the crops.

    ``truth.csv`` (``image,true_mask``) names each field's true label mask (16-bit TIFF; cells
    only, non-cells are not in it), for segmentation benchmarks.
    """
    img_lines = ["image,plate,protein,label,split"]
    cen_lines = ["image,x,y,cell,is_cell"]
    truth_lines = ["image,true_mask"]
    for pid, (tif, centres, _rows) in saved:
        p = proteins[pid]
        img_lines.append(f"{tif},{p['plate']},{p['well']},{p['label']},{p['split']}")
        truth_lines.append(f"{tif},{tif[:-4]}_truth.tif")
        cen_lines.extend(f"{tif},{x},{y},{cell},{q}" for cell, y, x, q in centres)
    atomic_write_text(os.path.join(save_dir, "images.csv"), "\n".join(img_lines) + "\n")
    atomic_write_text(os.path.join(save_dir, "centres.csv"), "\n".join(cen_lines) + "\n")
    atomic_write_text(os.path.join(save_dir, "truth.csv"), "\n".join(truth_lines) + "\n")


def _progress(iterable, total, enabled, desc):
    return progress(iterable, total=total, desc=f"synthetic {desc}", unit="protein", enabled=None if enabled else False)


def write_noncell_list(root, seed=0, n_max=PAPER_N_NONCELLS):
    """Write ``root/noncells.txt``: known non-cells of the validation split, one path per line.

    The paper's quality filter learns from 118 non-cells picked by eye in the
    validation set; the published archive has no such list.  Here the generator's
    own non-cells (``cell_quality.csv``, ``is_cell=0``) of ``HOwt_val.txt`` play
    that part: all of them, or a seeded sample of ``n_max`` (in list order) when
    there are more.  Returns the number of paths written.
    """
    with open(os.path.join(root, list_file("val")), encoding="utf-8") as f:
        val = [line.split()[0] for line in f if line.strip()]
    with open(os.path.join(root, "cell_quality.csv"), encoding="utf-8") as f:
        next(f)
        non = {row.split(",")[0] for row in f if row.split(",")[1] == "0"}
    picked = [p for p in val if p in non]
    if len(picked) > n_max:
        keep = np.sort(np.random.default_rng([seed, n_max]).choice(len(picked), n_max, replace=False))
        picked = [picked[i] for i in keep]
    atomic_write_text(os.path.join(root, NONCELL_LIST), "".join(p + "\n" for p in picked))
    return len(picked)


def make_screen(out_dir, size="tiny", seed=0, jobs=None, field_size=FIELD_SIZE, save_fields=0, progress=True,
                difficulty=1.0):
    """Generate a synthetic screen under ``out_dir``.

    Writes ``out_dir/main`` (``HOwt_{train,val,test}.txt``, ``HOwt_doc.txt``,
    ``noncells.txt``: see :func:`write_noncell_list`; ``mixed_proteins.csv``: the proteins with two
    compartments, whose crops are in no list) and
    ``out_dir/transfer`` (``HOwt_transfer_*.txt``, ``HOwt_transfer_doc.txt``),
    each with ``plateNN/*.png`` crops, ``proteins.csv`` and ``cell_quality.csv`` (truth the
    published archive does not have),
    plus ``out_dir/screen.json`` (parameters and counts).  Each root is written
    atomically.  ``save_fields`` > 0 also keeps the micrographs of the first
    that many proteins of each set as TIFF in ``<root>/fields`` with their true
    label masks (``*_truth.tif``, listed in ``truth.csv``) and
    ``images.csv``/``centres.csv`` for ``data_prep/crop_cells.py``.
    ``jobs``: processes (default: all CPUs).  Deterministic per
    ``(size, seed, field_size, difficulty)`` whatever the number of processes.
    ``difficulty``: see :func:`plan_screen`.
    Returns the summary dict written to ``screen.json``.
    """
    jobs = jobs or os.cpu_count() or 1
    proteins = plan_screen(size, seed, difficulty)
    summary = {"size": size, "seed": seed, "difficulty": difficulty, "field_size": field_size,
               "image_size": IMAGE_SIZE}
    os.makedirs(out_dir, exist_ok=True)
    for set_name in ("main", "transfer"):
        with atomic_folder(os.path.join(out_dir, set_name)) as tmp:
            summary[set_name] = _write_screen_root(tmp, proteins, set_name, field_size, jobs, save_fields, progress)
            if set_name == "main":
                summary[set_name]["n_listed_noncells"] = write_noncell_list(tmp, seed)
    atomic_write_json(os.path.join(out_dir, "screen.json"), summary, indent=2)
    return summary


# ============================================================================ gallery

def example_crops(set_name, label, n=2, seed=0, dim=False):
    """``n`` in-focus-ish cell crops (uint8 n x 2 x 64 x 64) of one class, freshly rendered."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11, label, set_name == "main"]))
    names = CLASS_SETS[set_name]
    protein = dict(set=set_name, label=label, expression=15.0 if dim else 120.0, mixture_fraction=None,
                   noncell_share=0.0, _style=_protein_style(names[label], rng))
    image, centres, _ = render_field(rng, protein, 8, 256)
    pts = np.array([(y, x) for y, x, _, _ in centres], float)
    crops, _, padded = crop_cells(image, pts, IMAGE_SIZE, "skip")
    return crops[:n]


def make_gallery(out_png, seed=0, per_class=2):
    """Figure with ``per_class`` example crops per class (12 main + 4 transfer), like the paper's Fig. 1B."""
    from deepyeast.utils.plotting import crop_rgb, plt, save_figure
    classes = [("main", i, n) for i, n in enumerate(CLASS_NAMES)] + \
              [("transfer", i, n) for i, n in enumerate(TRANSFER_CLASS_NAMES)]
    ncol = 4
    nrow = math.ceil(len(classes) / ncol)
    fig, axes = plt.subplots(nrow, ncol * per_class, figsize=(ncol * per_class * 1.3, nrow * 1.55))
    for ax in axes.ravel():
        ax.axis("off")
    for k, (set_name, label, name) in enumerate(classes):
        crops = example_crops(set_name, label, per_class, seed)
        r, c0 = divmod(k, ncol)
        for j, crop in enumerate(crops):
            ax = axes[r, c0 * per_class + j]
            ax.imshow(crop_rgb(crop, marker_gain=0.8), interpolation="nearest")
            if j == 0:
                ax.set_title(name + (" (transfer)" if set_name == "transfer" else ""), fontsize=7, loc="left")
    fig.suptitle("Synthetic screen: two example cells per class (red: cytosolic marker, green: protein)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110, formats=("png",))
    return out_png


def write_screen_result(out_dir, summary, gallery_file, command=None):
    """A result manifest describing the synthetic screen, with its gallery, for the report's first section."""
    from deepyeast.utils.manifest import Result, figure, table, write_result

    rows = []
    for set_name, label in (("main", "12 compartments"), ("transfer", "4 transfer compartments")):
        s = summary.get(set_name)
        if s:
            per = s["per_split"]
            rows.append([label, s["n_proteins"], *(per.get(k, 0) for k in SPLITS), s["n_noncells"]])
    text = (f"A synthetic screen (size {summary['size']}, seed {summary['seed']}): whole {summary['field_size']} x "
            f"{summary['field_size']} two-channel micrographs of budding yeast rendered per protein (red: cytosolic "
            f"marker, green: the protein's compartment pattern), cropped {summary['image_size']} x "
            f"{summary['image_size']} around each cell as real micrographs are.  Proteins are split whole between "
            "train, val and test.")
    main = summary.get("main") or {}
    if main.get("n_mixed_proteins"):
        text += (f"  {main['n_mixed_proteins']} proteins localised to two compartments "
                 f"({main['per_split'].get(MIXED_SPLIT, 0):,} cells) are kept out of every split, as in the paper, "
                 f"and listed with both compartments in main/{MIXED_TABLE}.")
    return write_result(out_dir, Result("screen", "The cells: a synthetic screen", text,
                        figures=[figure(gallery_file, "Two example cells of each compartment (red: cytosolic marker, "
                                                      "green: the tagged protein).")],
                        tables=[table("Cells per split", ["set", "proteins", *SPLITS, "non-cells among them"], rows,
                                      "Counts are crops; non-cells (empty fields, debris, bad segmentations) carry "
                                      "their protein's label, as in the real data.")],
                        details=summary, seeds={"seed": summary["seed"]}, command=command, order=5))
