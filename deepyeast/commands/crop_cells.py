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
Output (--out DIR): plateNN/<protein>-<field>-<cell>-<k>.png (RGB, R = marker, G = protein),
HOwt_{train,val,test}.txt (split by protein), HOwt_doc.txt, crops.csv (with
label and class name), and with --skip-bad rejects.txt.  Prints a JSON summary
(crops, padded, skipped, rejected, images without cells).  Bad input (file,
row and reason on one line; exit 2): unreadable or truncated file,
single-channel file where two are needed, channels of different sizes,
16-bit data without --bits or beyond it, a stack with several Z planes or
time points, a centre outside its image, a protein left without cells.

Example:
  python data_prep/crop_cells.py myscreen/images.csv --out runs/mine/archive --channels 1 0 --border skip
"""

import json

from deepyeast import constants, launcher


def options(p):
    p.add_argument("images", type=launcher.existing_file, help="images table (CSV)")
    launcher.add_output_folder(p, "archive root to write (replaced atomically)")
    p.add_argument("--centres", type=launcher.existing_file, help="cell centres table (CSV) instead of masks")
    launcher.add_micrograph_channels(p)
    p.add_argument("--border", choices=("pad", "skip"), default="pad",
                   help="cells closer than 32 px to the edge: zero-pad or skip (default: %(default)s)")
    launcher.add_class_set(p)
    p.add_argument("--fractions", type=float, nargs=3, default=constants.SPLIT_FRACTIONS,
                   metavar=("TRAIN", "VAL", "TEST"),
                   help="cell shares of the splits when assigned by protein (default: %(default)s)")
    launcher.add(p, "seed", help="seed of the split assignment (default %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad images/rows, list them in rejects.txt")


def run(args):
    from deepyeast.data.crop_cells import SplitRule, crop_screen

    out = launcher.output_folder(args)
    summary = crop_screen(args.images, out, centres_csv=args.centres, fmt=launcher.micrograph_format(args),
                          border=args.border, classes=args.classes, splits=SplitRule(args.fractions, args.seed),
                          skip_bad=args.skip_bad)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
