#!/usr/bin/env python3
"""Generate the synthetic yeast screen (the project's embedded default data set).

Renders whole two-channel micrographs of budding yeast per protein (red:
cytosolic marker, green: the protein's compartment pattern, for the 12 classes
of the paper and the 4 transfer classes), crops every cell 64x64 through the
crop step, and writes two archive roots in the published layout:

  OUT/main/      plateNN/*.png, HOwt_{train,val,test}.txt, HOwt_doc.txt,
                 proteins.csv, cell_quality.csv (is_cell 1/0)
  OUT/transfer/  plateNN/*.png, HOwt_transfer_{train,val,test}.txt, ...
  OUT/screen.json  sizes, seed and counts

Sizes: tiny (~600 cells, tests), small (~3,200), demo (~21,000: 18,000/1,000/1,000
+ transfer 400/200/400), paper (90,000 + transfer 10,000).  Same seed and
size -> identical output.  Example:

  python data_prep/make_synthetic.py runs/demo/data --size demo --gallery runs/demo/gallery.png
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.synthetic import FIELD_SIZE, SIZES, make_gallery, make_screen  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", help="output folder (main/ and transfer/ are written inside)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="screen size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--field-size", type=int, default=FIELD_SIZE, help="micrograph side, pixels (default: %(default)s)")
    parser.add_argument("--save-fields", type=int, default=0, metavar="N",
                        help="also keep the micrographs of the first N proteins per set (TIFF + images.csv + "
                             "centres.csv in <root>/fields, input for crop_cells.py; with their true label masks "
                             "listed in truth.csv, for bench/bench_segment.py)")
    parser.add_argument("--difficulty", type=float, default=1.0,
                        help="scale of the shares of dim proteins, defocused cells, non-cells and cytosolic haze "
                             "(default: %(default)s; 0 = none)")
    parser.add_argument("--gallery", metavar="PNG", help="write a figure with two example cells per class")
    args = parser.parse_args(argv)
    if not args.out and not args.gallery:
        parser.error("give an output folder, --gallery PNG, or both")
    if args.out:
        t0 = time.time()
        summary = make_screen(args.out, args.size, args.seed, args.workers, args.field_size, args.save_fields,
                              difficulty=args.difficulty)
        summary["seconds"] = round(time.time() - t0, 1)
        print(json.dumps(summary, indent=1))
    if args.gallery:
        make_gallery(args.gallery, args.seed)
        print(f"gallery: {args.gallery}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
