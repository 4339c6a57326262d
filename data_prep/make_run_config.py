#!/usr/bin/env python3
"""Write a run folder's train_val.prototxt and solver.prototxt from models/deepyeast/.

Inputs: an LMDB folder with train_lmdb/, val_lmdb/ and mean.binaryproto (from
data_prep/make_lmdb.py) and a model-zoo solver.  Outputs: RUN/train_val.prototxt
(the model's net with the data paths changed) and RUN/solver.prototxt (the
solver with the net, RUN/snapshots/deepyeast as snapshot prefix, and any
schedule overrides).  Train with `deepyeast train -solver RUN/solver.prototxt`
or `bin/caffe train -solver RUN/solver.prototxt` from the repository root.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.utils.io import InputError  # noqa: E402
from deepyeast.engine.runconfig import parse_overrides, write_run_config  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lmdb-dir", required=True, help="folder with train_lmdb, val_lmdb, mean.binaryproto")
    parser.add_argument("--out", required=True, help="run folder to write the prototxts into")
    parser.add_argument("--solver", default="models/deepyeast/solver_cpu.prototxt",
                        help="model-zoo solver to start from (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="schedule override, e.g. --set max_iter=300 --set test_iter=10")
    args = parser.parse_args(argv)
    try:
        path = write_run_config(args.out, args.lmdb_dir, args.solver, parse_overrides(args.set))
    except InputError as err:
        parser.exit(2, f"error: {err}\n")
    print(path)


if __name__ == "__main__":
    main()
