"""Write a run folder's train_val.prototxt and solver.prototxt from models/deepyeast/.

Inputs: an LMDB folder with train_lmdb/, val_lmdb/ and mean.binaryproto (from
data_prep/make_lmdb.py) and a model-zoo solver.  Outputs (in --out DIR): train_val.prototxt
(the model's net with the data paths changed) and solver.prototxt (the solver with the net,
DIR/snapshots/deepyeast as snapshot prefix, and any schedule overrides).  Train with
`deepyeast train -solver DIR/solver.prototxt` or `bin/caffe train -solver DIR/solver.prototxt`.

Example:
  python data_prep/make_run_config.py --lmdb runs/mine/lmdb --out runs/mine/train \\
      --solver models/deepyeast/solver.prototxt --set max_iter=300
"""

from deepyeast import launcher


def options(p):
    launcher.add(p, "lmdb", required=True, type=launcher.existing_dir,
                 help="folder with train_lmdb, val_lmdb, mean.binaryproto")
    launcher.add(p, "out", required=True, metavar="DIR", help="run folder to write the prototxts into")
    p.add_argument("--solver", type=launcher.existing_file, default=None,
                   help="model-zoo solver to start from (default: models/deepyeast/solver_cpu.prototxt)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="schedule override, e.g. --set max_iter=300 --set test_iter=10")


def run(args):
    from deepyeast.engine.run_config import parse_overrides, write_run_config

    print(write_run_config(args.out, args.lmdb, args.solver, parse_overrides(args.set)))


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
