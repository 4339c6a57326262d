"""Find the cells in each micrograph of a screen and write label masks.

Segments the cytosolic marker channel (it fills each cell): background
correction, a threshold (Otsu's on the corrected image), holes (vacuoles)
filled, a seeded watershed on the distance transform to split touching cells,
then size and border filters.  The defaults suit screens imaged like the
paper's (64 x 64 crops hold one cell; mother cells ~20-35 px across); at
another magnification scale the pixel parameters with the cell diameter.

Inputs:
  IMAGES  CSV, the table crop_cells.py reads: image (one multi-channel file:
          TIFF, OME-TIFF or PNG) or marker_image,protein_image (two
          single-channel files); plate, protein, label, split optional and
          passed through.  A row with a mask (CellProfiler, cellpose, YeaZ...)
          keeps it unless --resegment.
Output (--out DIR, replaced atomically):
  masks/*.png        16-bit label masks (0 background, k = cell k)
  images.csv         the input table + mask + n_cells (input of crop_cells.py)
  cells.csv          image,plate,protein,cell,x,y,area[,label,class]
  segmentation.csv   per image: source, n_cells, threshold, objects dropped
  params.json        the parameters used;  rejects.txt with --skip-bad
A micrograph without cells is kept (n_cells 0) and named on stderr.  Prints a
JSON summary.  Bad input (unreadable or truncated file, single-channel file
where two are needed, 16-bit data without --bits or beyond it, a mask of the
wrong size): one line naming table row and file, exit 2, nothing written.

Example:
  python data_prep/segment_cells.py myscreen/images.csv --out runs/mine/seg --channels 1 0 --bits 12
  python data_prep/crop_cells.py runs/mine/seg/images.csv --out runs/mine/archive
"""

import json

from deepyeast import constants, launcher


def options(p):
    p.add_argument("images", type=launcher.existing_file, help="images table (CSV)")
    launcher.add_output_folder(p, "output folder (replaced atomically)")
    launcher.add_micrograph_channels(p)
    launcher.add_segment_params(p)
    p.add_argument("--resegment", action="store_true", help="segment rows that already name a mask too")
    launcher.add_class_set(p)
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows, list them in OUT/rejects.txt")


def run(args):
    from deepyeast.data.segment_cells import CellFinding, segment_screen

    out = launcher.output_folder(args)
    finding = CellFinding(launcher.segment_params(args), launcher.micrograph_format(args), args.resegment)
    summary = segment_screen(args.images, out, finding, skip_bad=args.skip_bad,
                             class_names=constants.CLASS_SETS[args.classes])
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
