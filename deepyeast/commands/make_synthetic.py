"""Generate the synthetic yeast screen (the project's embedded default data set).

Renders whole two-channel micrographs of budding yeast per protein (red:
cytosolic marker, green: the protein's compartment pattern, for the 12 classes
of the paper and the 4 transfer classes), crops every cell 64x64 through the
crop step, and writes two archive roots in the published layout:

  OUT/main/      plateNN/*.png, HOwt_{train,val,test}.txt, HOwt_doc.txt, and the truth the
                 published archive lacks: proteins.csv, cell_quality.csv (is_cell 1/0),
                 mixed_proteins.csv (proteins with two compartments, held out of every
                 split list; their crops are under plateNN/ too), noncells.txt (the screen's
                 known non-cells of the validation split, at most 118: the stand-in for the
                 paper's hand-picked list that trains the non-cell filter)
  OUT/transfer/  plateNN/*.png, HOwt_transfer_{train,val,test}.txt, ...
  OUT/screen.json  sizes, seed and counts

Sizes: tiny (~600 cells, tests), small (~3,200), demo (~21,000: 18,000/1,000/1,000
+ transfer 400/200/400), paper (90,000 + transfer 10,000).  Same seed and
size -> identical output.  Example:

  python data_prep/make_synthetic.py --out runs/demo/data --size demo --gallery runs/demo/figures/gallery.png

With both --out and --gallery, the gallery's folder also gets a result.json describing the screen
(the report's first section).

A pair of screens to compare (--pair; deepyeast/data/make_synthetic/condition.py): a reference and a
condition screen of the same --pair-proteins proteins (drawn from the --size screen's plan), a
seeded share of them relocalised in the condition, micrograph effects (defocus, exposure, a pull
toward a wrong compartment) on both sides, different cell counts.  --pair micrographs writes
OUT/reference/ and OUT/condition/ (TIFF micrographs + images.csv for classify_screen.py);
--pair probabilities writes the cells.csv a classifier would give (simulated, no network);
both write OUT/truth.csv (which proteins moved where; read by benches and tests, never by the
comparison).  Example:

  python data_prep/make_synthetic.py --pair micrographs --size demo --pair-proteins 60 --out runs/demo/pair
"""

import json
import os
import time

from deepyeast import launcher


def options(p):
    from deepyeast.data.make_synthetic import FIELD_SIZE, SIZES

    launcher.add_output_folder(p, "output folder (main/ and transfer/ are written inside)")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny", help="screen size (default: %(default)s)")
    launcher.add(p, "seed")
    launcher.add(p, "jobs")
    p.add_argument("--field-size", type=int, default=FIELD_SIZE,
                   help="micrograph side, pixels (default: %(default)s)")
    p.add_argument("--save-fields", type=int, default=0, metavar="N",
                   help="also keep the micrographs of the first N proteins per set (TIFF + images.csv + "
                        "centres.csv in <root>/fields, input for crop_cells.py; with their true label masks "
                        "listed in truth.csv, for bench/bench_segment.py)")
    p.add_argument("--difficulty", type=float, default=1.0,
                   help="scale of the shares of dim proteins, defocused cells, non-cells and cytosolic haze "
                        "(default: %(default)s; 0 = none)")
    p.add_argument("--gallery", metavar="PNG", help="write a figure with two example cells per class")
    pair = p.add_argument_group("a pair of screens to compare")
    pair.add_argument("--pair", choices=("micrographs", "probabilities"),
                      help="write a reference/condition pair instead of a training screen")
    pair.add_argument("--pair-proteins", type=launcher.positive_int, default=60, metavar="N",
                      help="proteins in the pair (default: %(default)s)")
    pair.add_argument("--movers", type=float, default=0.15,
                      help="share of the proteins relocalised in the condition (default: %(default)s)")


def run(args):
    from deepyeast.data.make_synthetic import make_gallery, make_screen
    from deepyeast.data.make_synthetic.screen import write_screen_result
    from deepyeast.utils.io import InputError

    out = args.out or args.out_positional
    if args.pair:
        return _pair(args, out)
    if not out and not args.gallery:
        raise InputError("give an output folder (--out DIR), --gallery PNG, or both")
    if out:
        t0 = time.time()
        summary = make_screen(out, args.size, args.seed, args.jobs, args.field_size, args.save_fields,
                              difficulty=args.difficulty)
        summary["seconds"] = round(time.time() - t0, 1)
        print(json.dumps(summary, indent=1))
    if args.gallery:
        make_gallery(args.gallery, args.seed)
        print(f"gallery: {args.gallery}")
        if out:  # the gallery's folder gets the screen's result manifest (the report's first section)
            write_screen_result(os.path.dirname(os.path.abspath(args.gallery)), summary,
                                os.path.basename(args.gallery), command=args.command)


def _pair(args, out):
    from deepyeast.data.make_synthetic.condition import ConditionSettings, render_pair, simulate_pair
    from deepyeast.utils.io import InputError

    if not out:
        raise InputError("give the output folder of the pair (--out DIR)")
    if not 0 <= args.movers <= 1:
        raise InputError(f"--movers must be in [0, 1], not {args.movers}")
    settings = ConditionSettings(proteins=args.pair_proteins, movers=args.movers)
    t0 = time.time()
    if args.pair == "micrographs":
        plan = render_pair(out, args.size, args.seed, settings, jobs=args.jobs)
    else:
        plan = simulate_pair(out, args.size, args.seed, settings)
    print(f"{len(plan)} proteins, {sum(p['mover'] for p in plan)} relocalised in the condition; "
          f"{sum(len(p['ref']) for p in plan)} + {sum(len(p['cond']) for p in plan)} micrographs; "
          f"wrote {out} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
