#!/usr/bin/env python3
"""Convert an archive's split lists into Caffe LMDBs, the training mean and manifests.

Reads ROOT/HOwt_{train,val,test}.txt (or HOwt_transfer_* with --transfer) and the
crops they list, and writes OUT/{train,val,test}_lmdb (Caffe Datum, shuffled like
`convert_imageset -shuffle`), OUT/mean.binaryproto (per-pixel mean of train_lmdb,
like `compute_image_mean`) and OUT/<split>_manifest.json (counts per class and per
protein, checksums).  Bad crops or lines stop it with the file and reason; with
--skip-bad they are left out and listed in OUT/<split>_rejects.txt.

Example:
  python data_prep/make_lmdb.py runs/demo/data/main runs/demo/lmdb
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.data.lmdb_bundle import build_lmdb_bundle  # noqa: E402
from deepyeast.utils.io import InputError  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="archive root (plateNN/ folders)")
    parser.add_argument("out", help="bundle folder to write")
    parser.add_argument("--lists", help="folder with the split lists (default: ROOT)")
    parser.add_argument("--transfer", action="store_true", help="use HOwt_transfer_* lists and the 4 transfer classes")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default: %(default)s)")
    parser.add_argument("--skip-bad", action="store_true", help="leave out bad crops/lines and list them")
    args = parser.parse_args(argv)
    try:
        summary = build_lmdb_bundle(args.root, args.out, prefix="HOwt_transfer_" if args.transfer else "HOwt_",
                                    list_dir=args.lists, seed=args.seed, skip_bad=args.skip_bad)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
