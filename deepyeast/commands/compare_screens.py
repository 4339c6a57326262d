"""Compare two classified screens: which proteins change compartment, with a false-discovery rate that holds.

Inputs: classify_screen.py output folders.  Of each, cells.csv is the one file required, and of
it the columns image, protein, prob_0..prob_{K-1} (class/pred and summary.json name the
compartments; other columns are ignored; cells with an `ood` column set are left out and
counted).  Proteins are matched by `protein` (the ORF), whatever their plate.  Several folders
after --reference or --condition are replicates of that side: their micrographs are pooled, and
replicate-to-replicate shifts enter the null.

Method (the micrograph is the unit; see deepyeast/analysis/compare_screens.py): per protein and screen,
each micrograph's profile is the mean compartment probability of its cells and the protein's
profile the cell-weighted mean; the effect is the total-variation distance between the two
screens' profiles (0..1), with a 95% bootstrap interval over micrographs.  The p-value compares
the profile difference with a null of no change: both screens rebuilt from the protein's cells
with micrograph effects drawn from how micrographs of proteins with the same call vary within
each screen.  Benjamini-Hochberg q-values; changed = q < --fdr.

Output (--out DIR, replaced as a whole, atomically):
  changes.csv   one row per protein in both screens: protein, ref_/cond_micrographs,
                ref_/cond_cells, ref_call, ref_share, cond_call, cond_share, gained, gained_by,
                lost, lost_by, effect, effect_lo, effect_hi, p, q, changed (0/1), insufficient
                (the reason a protein was not tested: too few micrographs or cells on a side)
  report.html   counts, the method in words, a volcano plot, where proteins moved (reference
                call -> condition call), and per hit its cells in both screens (the classify
                folders' gallery strips, copied to gallery/; keep the folder together)
  summary.json  counts, flows, the null's calibration, settings, the command; also how many
                proteins a naive per-cell chi-square test (+ BH) would call, for comparison
  result.json   the result manifest (a run's report.html shows the comparison and links its page)

Bad input (one line naming the file, exit 2, nothing written): a folder without cells.csv, a
cells.csv without probability columns, screens with different class sets or models, no protein
in common.

Example:
  python analysis/compare_screens.py --reference runs/wt/classified --condition runs/rapamycin/classified \\
      --out runs/compare_rapamycin
"""

from deepyeast import launcher


def options(p):
    from deepyeast.analysis.compare_screens import CompareSettings

    d = CompareSettings()
    p.add_argument("--reference", required=True, nargs="+", metavar="DIR", type=launcher.existing_dir,
                   help="classify_screen output folder(s) of the reference screen (several: replicates)")
    p.add_argument("--condition", required=True, nargs="+", metavar="DIR", type=launcher.existing_dir,
                   help="classify_screen output folder(s) of the condition screen (several: replicates)")
    launcher.add(p, "out", required=True, metavar="DIR", help="output folder (replaced atomically)")
    p.add_argument("--fdr", type=float, default=d.fdr,
                   help="false-discovery rate: changed = Benjamini-Hochberg q below it (default: %(default)s)")
    p.add_argument("--min-micrographs", type=launcher.positive_int, default=d.min_micrographs,
                   help="fewer micrographs than this on a side: insufficient (default: %(default)s)")
    p.add_argument("--min-cells", type=launcher.positive_int, default=d.min_cells,
                   help="fewer cells than this on a side: insufficient (default: %(default)s)")
    p.add_argument("--null-draws", type=launcher.positive_int, default=d.null_draws,
                   help="draws of the null per protein; p-values are multiples of 1/(draws+1) (default: %(default)s)")
    launcher.add(p, "resamples", default=d.resamples,
                 help="bootstrap resamples of the effect's interval (default %(default)s)")
    launcher.add(p, "seed")
    p.add_argument("--hits-shown", type=launcher.positive_int, default=d.hits_shown,
                   help="changed proteins shown with their cells in the report (default: %(default)s)")


def run(args):
    from deepyeast.analysis.compare_screens import CompareSettings
    from deepyeast.report.compare_html import run_compare

    settings = CompareSettings(fdr=args.fdr, min_micrographs=args.min_micrographs, min_cells=args.min_cells,
                               null_draws=args.null_draws, resamples=args.resamples, seed=args.seed,
                               hits_shown=args.hits_shown)
    s = run_compare(args.reference, args.condition, args.out, settings, command=args.command)
    n = s["proteins"]
    print(f"{n['in_both']} proteins in both screens, {n['tested']} tested ({n['insufficient']} insufficient); "
          f"{n['changed']} changed at q < {args.fdr:g} (a per-cell test would call "
          f"{n['changed_naive_per_cell_test']}); "
          f"wrote {args.out}")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
