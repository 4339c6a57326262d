"""Copy the snapshot a run uses (final, or lowest validation loss) to OUT, atomically.

After training: the final snapshot, or with ``--rule val_loss`` the one of the lowest validation
loss in the training log, copied to OUT; ``--prune`` then removes every other snapshot except the
newest (the resume point).

Example:
  python data_prep/choose_snapshot.py RUN/train/solver.prototxt RUN/train/chosen.caffemodel \\
      --rule val_loss --log RUN/train/train.log --prune
"""

from deepyeast import launcher


def options(p):
    p.add_argument("solver", type=launcher.existing_file, help="the run's solver.prototxt")
    p.add_argument("out", help="where to copy the chosen .caffemodel")
    p.add_argument("--rule", choices=["final", "val_loss"], default="final",
                   help="which snapshot: the last, or the lowest validation loss (default: %(default)s)")
    p.add_argument("--log", help="training log (for --rule val_loss)")
    p.add_argument("--prune", action="store_true",
                   help="then remove every other snapshot except the newest (the resume point)")


def run(args):
    from deepyeast.engine.run_config import copy_chosen_snapshot

    chosen, it, removed, freed = copy_chosen_snapshot(args.solver, args.out, args.rule, args.log, args.prune)
    print(f"{chosen} -> {args.out}")
    if args.prune:
        print(f"pruned {len(removed)} snapshot files ({freed / 2**20:.0f} MiB); kept iteration {it} and the newest")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
