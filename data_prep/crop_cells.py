#!/usr/bin/env python3
"""Cut 64x64 single-cell crops from two-channel micrographs into the archive layout.

Inputs:
  IMAGES  CSV with columns image,plate,protein,label[,split][,mask]
          image: micrograph (TIFF, OME-TIFF, PNG), relative to the CSV; or
          marker_image,protein_image: two single-channel files instead;
          plate: integer; protein: id without '-' or '/' (e.g. the well
          001002000); label: class index or name; split: train/val/test (else
          assigned by protein); mask: label image (0 background, k = cell k),
          same size as the image (from segment_cells.py, CellProfiler,
          cellpose, YeaZ...).  segment_cells.py writes this table with masks.
  --centres CSV with columns image,x,y[,cell][,is_cell] instead of masks
          (x = column, y = row, pixels from 0); CellProfiler's
          ImageNumber,ObjectNumber,Location_Center_X,Location_Center_Y (also
          with an object prefix, e.g. Cells_Location_Center_X) work too,
          ImageNumber counting the rows of IMAGES.
Output OUT: plateNN/<protein>-<field>-<cell>-<k>.png (RGB, R = marker, G = protein),
HOwt_{train,val,test}.txt (split by protein), HOwt_doc.txt, crops.csv (with
label and class name), and with --skip-bad rejects.txt.  Prints a JSON summary
(crops, padded, skipped, rejected, images without cells).  Bad input (file,
row and reason on one line; exit 2): unreadable or truncated file,
single-channel file where two are needed, channels of different sizes,
16-bit data without --bits or beyond it, a stack with several Z planes or
time points, a centre outside its image, a protein left without cells.

Example:
  python data_prep/crop_cells.py myscreen/images.csv runs/mine/archive --channels 1 0 --border skip
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.constants import CLASS_NAMES, TRANSFER_CLASS_NAMES  # noqa: E402
from deepyeast.crops import crop_screen  # noqa: E402
from deepyeast.io_utils import InputError  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", help="images table (CSV)")
    parser.add_argument("out", help="archive root to write (replaced atomically)")
    parser.add_argument("--centres", help="cell centres table (CSV) instead of masks")
    parser.add_argument("--channels", type=int, nargs=2, default=(0, 1), metavar=("MARKER", "PROTEIN"),
                        help="channel indices of the marker and the protein in the micrographs (default: 0 1)")
    parser.add_argument("--bits", type=int, help="bit depth of 16-bit micrographs (e.g. 12); rescaled to 8 bits "
                        "(refused when values exceed it)")
    parser.add_argument("--border", choices=("pad", "skip"), default="pad",
                        help="cells closer than 32 px to the edge: zero-pad or skip (default: %(default)s)")
    parser.add_argument("--transfer", action="store_true", help="use the 4 transfer classes and HOwt_transfer_* names")
    parser.add_argument("--fractions", type=float, nargs=3, default=(0.72, 0.14, 0.14), metavar=("TRAIN", "VAL", "TEST"),
                        help="cell shares of the splits when assigned by protein (default: 0.72 0.14 0.14)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split assignment")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad images/rows, list them in rejects.txt")
    args = parser.parse_args(argv)
    try:
        summary = crop_screen(args.images, args.out, centres_csv=args.centres, channels=tuple(args.channels),
                              bits=args.bits, border=args.border,
                              class_names=TRANSFER_CLASS_NAMES if args.transfer else CLASS_NAMES,
                              prefix="HOwt_transfer_" if args.transfer else "HOwt_", fractions=args.fractions,
                              seed=args.seed, skip_bad=args.skip_bad)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
