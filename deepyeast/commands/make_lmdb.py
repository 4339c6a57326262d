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
    launcher.add_output_folder(p, "bundle folder to write")
    p.add_argument("--lists", type=launcher.existing_dir, help="folder with the split lists (default: ROOT)")
    launcher.add_class_set(p)
    launcher.add(p, "seed", help="shuffle seed (default %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="leave out bad crops/lines and list them")


def run(args):
    from deepyeast.data.make_lmdb import build_lmdbs

    out = launcher.output_folder(args)
    summary = build_lmdbs(args.root, out, prefix=constants.list_prefix(args.classes), list_dir=args.lists,
                          skip_bad=args.skip_bad, context=args.context)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
