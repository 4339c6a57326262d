"""Classify a new screen: raw two-channel micrographs -> cells -> per-protein localisation calls.

Finds the cells of every micrograph (the marker channel is segmented, as
data_prep/segment_cells.py does, unless the table gives a mask), cuts a 64 x 64 crop
centred on each cell, runs the model bundle's network on every crop, and calls each
protein from its cells with the paper's Dirichlet model (uniform prior, the cells'
probabilities as soft counts).  Labels are not needed; where the table has them, the
report adds the per-cell and per-protein accuracies.

Inputs:
  --model DIR    a model bundle (RUN/model/ of `make demo` / `make reproduce`,
                 analysis/make_bundle.py, or analysis/convert_keras_weights.py); refused
                 when its class table, input shape or mean shape disagree or a file's
                 checksum does not match
  --images CSV   the images table of crop_cells.py / segment_cells.py: image (one
                 multi-channel TIFF, OME-TIFF or PNG, or an OME-Zarr: see below) or
                 marker_image,protein_image (two single-channel files); protein (required),
                 plate, well, label (class index or name, optional) and mask (a label image:
                 use it instead of segmenting) optional; paths relative to the table.  A
                 protein is a (plate, protein) pair; its cells are those of all its micrographs.
  --images DIR --pattern '{plate}_{well}_{field}_{channel}.tif'
                 a folder of single-channel micrographs named by a pattern instead of a table
                 (subfolders allowed: 'plate{plate}/{well}_{field}_{channel}.tif'); the files of
                 one micrograph differ in {channel}: the marker and protein are picked by
                 --channel-names MARKER PROTEIN, else by the usual names (RFP, mCherry, red;
                 GFP, green); without {protein} the well names the protein.  Files with the
                 pattern's extension that do not match it, and a micrograph missing a channel,
                 are bad input.
  --images plate.zarr
                 every field of an OME-Zarr HCS plate, the well naming the protein.
OME-Zarr (NGFF 0.4/0.5, read with ome-zarr-py): an image cell may name x.zarr (one image),
x.zarr#N (series N of an image series), plate.zarr#ROW/COLUMN/FIELD (a field of an HCS
plate's well, e.g. plate.zarr#B/3/0), or plate.zarr with columns row, column, field.  The
plate's well fills the well column.  Plate and well reach images.csv, cells.csv and
proteins.csv (a protein imaged in several wells lists them, ;-separated).
Large screens: the micrographs are classified in chunks (--chunk, default 16) as tasks on
Dask (--scheduler none|local|tcp://HOST:PORT, --jobs; workers of a remote cluster read the
micrographs by the table's paths, so they need the same file system).  Each finished chunk
is kept in OUT.work/ beside OUT until OUT is written; the same command after a kill or a
power loss redoes only the unfinished chunks (summary.json: reused_micrographs).  A work
folder of another model, images table or chunk setting is refused (--restart discards it);
a corrupt chunk file is redone, never merged.  A second run into the same OUT while one is
running stops at once (exit 3, naming the first's pid).

Output (--out DIR, replaced as a whole, atomically):
  cells.csv      image,plate,well,protein,cell,x,y,area,padded,pred,class,prob_0..prob_{K-1}
                 (+ label,true_class where given); x,y the centroid (pixels, x = column)
  proteins.csv   plate,well,protein,n_images,n_cells,pred,class,top1,top1_share,top2,top2_share,
                 p_call,few_cells,low_confidence,possible_dual,no_cells,post_0..post_{K-1}
                 (+ label,true_class,correct); post_k = the Dirichlet posterior's MAP shares
  images.csv     per micrograph: mask (given | segmented), n_cells and QC: focus (variance
                 of the marker's Laplacian), saturated (share of pixels at 255),
                 background_marker, background_protein (median grey outside the cells)
  summary.json   counts, flag definitions, accuracies, the precision check, settings
  report.html    screen summary and per protein a gallery of its cells (with figures/ and
                 gallery/ beside it; keep the folder together)
  rejects.txt    rows skipped with --skip-bad
Flags (proteins.csv, 1 = set): few_cells: fewer than --min-cells cells; low_confidence:
p_call, the posterior probability that the called compartment's share exceeds the
runner-up's, below --confidence; possible_dual: the runner-up's share at least
--dual-share; no_cells: no cell found (no call).  See deepyeast/analysis/classify_screen.py.

Bad input (one line naming table row and file, exit 2, nothing written): unreadable or
truncated file, a single-channel file where two are needed, channels of different sizes,
16-bit data without --bits, a mask of the wrong size, a protein with two labels, a model
folder that fails its checks.  --skip-bad classifies the rest and lists the skipped rows.
A micrograph without cells, and a protein without cells, are reported, not errors.
The same micrograph on two rows is refused naming both rows (it would count its cells twice).

Example:
  python analysis/classify_screen.py --model runs/demo/model --images myscreen/images.csv \\
      --out runs/mine/classified --channels 1 0 --bits 12
"""

from deepyeast import launcher


def options(p):
    from deepyeast.analysis.classify_screen import CONFIDENCE, DUAL_SHARE, GALLERY_CELLS
    from deepyeast.analysis.screen_run import CHUNK
    from deepyeast.constants import MIN_CELLS_PER_PROTEIN

    p.add_argument("--model", required=True, metavar="DIR", type=launcher.existing_dir,
                   help="model bundle folder (e.g. RUN/model)")
    p.add_argument("--images", required=True, metavar="CSV|DIR", type=launcher.existing_path,
                   help="images table (CSV), a folder of micrographs named by --pattern, or an OME-Zarr plate")
    p.add_argument("--pattern", metavar="PATTERN",
                   help="with --images DIR: how its files are named, e.g. '{plate}_{well}_{field}_{channel}.tif' "
                        "(fields {plate} {well} {field} {channel} {protein}; {channel} and {well} or {protein} "
                        "required; without {protein} the well names the protein)")
    p.add_argument("--channel-names", nargs=2, metavar=("MARKER", "PROTEIN"),
                   help="with --pattern: the {channel} values of the marker and the protein (default: recognised "
                        "names, e.g. RFP/mCherry/red and GFP/green)")
    launcher.add(p, "out", required=True, metavar="DIR", help="output folder (replaced atomically)")
    launcher.add_micrograph_channels(p)
    p.add_argument("--resegment", action="store_true", help="segment rows that name a mask too")
    p.add_argument("--border", choices=("pad", "skip"), default="pad",
                   help="cells closer than half a crop to the image edge: zero-pad or skip (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows, list them in OUT/rejects.txt")
    run = p.add_argument_group("running a large screen")
    launcher.add_cluster(run, "chunks of micrographs")
    run.add_argument("--chunk", type=launcher.positive_int, default=CHUNK,
                     help="micrographs per task and per work file in OUT.work (default: %(default)s)")
    run.add_argument("--restart", action="store_true",
                     help="discard an unfinished run in OUT.work made with another model, table or settings "
                          "(without it such a work folder is refused)")
    net = p.add_argument_group("network")
    launcher.add(net, "precision")
    net.add_argument("--compare-fp32", action="store_true",
                     help="with --precision bf16: also run fp32 and report how many calls change")
    launcher.add(net, "gpu")
    launcher.add(net, "batch")
    calls = p.add_argument_group("protein calls and report")
    calls.add_argument("--min-cells", type=launcher.positive_int, default=MIN_CELLS_PER_PROTEIN,
                       help="fewer cells than this flag a call few_cells (default: %(default)s, the paper's)")
    calls.add_argument("--confidence", type=float, default=CONFIDENCE,
                       help="p_call below this flags low_confidence (default: %(default)s)")
    calls.add_argument("--dual-share", type=float, default=DUAL_SHARE,
                       help="a runner-up share at least this flags possible_dual (default: %(default)s)")
    calls.add_argument("--gallery-cells", type=launcher.positive_int, default=GALLERY_CELLS,
                       help="cells shown per protein in the report (default: %(default)s)")
    launcher.add(calls, "resamples", help="bootstrap resamples of the per-cell accuracy interval when the table has "
                                         "labels (default %(default)s)")
    launcher.add(calls, "seed", help="seed of the bootstrap (default %(default)s)")
    launcher.add_segment_params(p)


def images_source(args):
    """``--images``: the table's path, an OME-Zarr plate (every field) or with ``--pattern`` an ImageFolder;
    one line for a wrong combination."""
    import os

    from deepyeast.data.screen_folder import ChannelNames, ImageFolder, compile_pattern
    from deepyeast.utils.io import InputError

    from deepyeast.data.omezarr import ZarrPlate, is_plate

    if os.path.isdir(args.images) and is_plate(args.images) and not args.pattern:
        return ZarrPlate(args.images)
    if os.path.isdir(args.images):
        if not args.pattern:
            raise InputError(f"{args.images}: a folder; give --pattern (how its micrographs are named), or an "
                             "images table (an OME-Zarr is named in a table's image column)")
        compile_pattern(args.pattern)  # a bad pattern before anything is read
        names = ChannelNames(*args.channel_names) if args.channel_names else None
        return ImageFolder(args.images, args.pattern, names)
    if args.pattern or args.channel_names:
        raise InputError(f"{args.images}: --pattern and --channel-names read a folder of micrographs, not a table")
    return args.images


def run(args):
    from deepyeast.analysis.classify_screen import CallRules, ClassifySettings, classify_screen
    from deepyeast.data.segment_cells import CellFinding

    finding = CellFinding(launcher.segment_params(args), launcher.micrograph_format(args), args.resegment,
                          border=args.border)
    settings = ClassifySettings(finding, launcher.inference_settings(args), compare_fp32=args.compare_fp32,
                                rules=CallRules(args.min_cells, args.confidence, args.dual_share),
                                gallery_cells=args.gallery_cells, n_resamples=args.resamples, chunk=args.chunk,
                                skip_bad=args.skip_bad, restart=args.restart)
    s = classify_screen(args.model, images_source(args), args.out, settings, args.context)
    f = s["flags"]
    line = (f"{s['n_cells']:,} cells in {s['n_images']} micrographs; {s['n_proteins_called']} of {s['n_proteins']} "
            f"proteins called ({f['low_confidence']} low confidence, {f['possible_dual']} possible dual, "
            f"{f['few_cells'] - f['no_cells']} with few cells)")
    if s["images_without_cells"]:
        line += f"; {len(s['images_without_cells'])} micrograph(s) without cells"
    if s["qc"]["flagged_micrographs"]:
        line += f"; {s['qc']['flagged_micrographs']} micrograph(s) flagged by QC (images.csv qc_flags)"
    if s["reused_micrographs"]:
        line += f"; {s['reused_micrographs']} micrograph(s) taken over from the interrupted run"
    if s["n_rejected"]:
        line += f"; {s['n_rejected']} rows skipped (rejects.txt)"
    acc = s["accuracy"]
    if acc:
        c, pr = acc["cell_accuracy"], acc["protein_accuracy"]
        line += (f"; labels: per cell {c['correct']}/{c['total']} = {c['value']:.3f}, per protein "
                 f"{pr['correct']}/{pr['total']}" + (f" = {pr['value']:.3f}" if pr["total"] else ""))
    ood = s["ood"]
    if ood["available"]:
        line += f"; {ood['n_flagged']} cell(s) flagged out of distribution ({100 * ood['share']:.1f}%), left out"
        if ood["warning"]:
            line += f" -- WARNING: {ood['warning']} (see report.html)"
    else:
        line += "; out-of-distribution check not available (the bundle has no statistics)"
    pc = s["precision_check"]
    if pc:
        line += (f"; {pc['precision']} vs fp32: {pc['cells_changed']} cell and {pc['proteins_changed']} protein "
                 "calls differ")
    print(line + f"; wrote {args.out}")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
