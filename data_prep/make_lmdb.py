#!/usr/bin/env python3
"""Convert an archive's split lists into Caffe LMDBs, the training mean and manifests.

Reads ROOT/HOwt_{train,val,test}.txt (or HOwt_transfer_* with --classes transfer) and the
crops they list, and writes into --out: {train,val,test}_lmdb (Caffe Datum, shuffled like
`convert_imageset -shuffle`), mean.binaryproto (per-pixel mean of train_lmdb, like
`compute_image_mean`) and <split>_manifest.json (counts per class and per protein,
checksums).  Bad crops or lines stop it with the file and reason; with --skip-bad they are
left out and listed in <split>_rejects.txt.

Example:
  python data_prep/make_lmdb.py runs/demo/data/main --out runs/demo/lmdb
"""

import json

from deepyeast import constants, launcher


def options(p):
    p.add_argument("root", type=launcher.existing_dir, help="archive root (plateNN/ folders)")
    p.add_argument("out_positional", nargs="?", metavar="OUT", help="same as --out (older form)")
    launcher.add(p, "out", metavar="DIR", help="bundle folder to write")
    p.add_argument("--lists", type=launcher.existing_dir, help="folder with the split lists (default: ROOT)")
    p.add_argument("--classes", choices=sorted(constants.CLASS_SETS), default="main",
                   help="class table and list names: main (HOwt_*) or transfer (HOwt_transfer_*)")
    p.add_argument("--transfer", dest="classes", action="store_const", const="transfer",
                   help="same as --classes transfer")
    launcher.add(p, "seed", help="shuffle seed (default %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="leave out bad crops/lines and list them")


def run(args):
    from deepyeast.data.lmdb_bundle import build_lmdb_bundle
    from deepyeast.utils.io import InputError

    out = args.out or args.out_positional
    if not out:
        raise InputError("give the bundle folder to write (--out DIR)")
    summary = build_lmdb_bundle(args.root, out, prefix=constants.list_prefix(args.classes), list_dir=args.lists,
                                seed=args.seed, skip_bad=args.skip_bad)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
