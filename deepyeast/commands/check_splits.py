"""Check DeepYeast split lists: counts, and no protein in two splits.

Prints JSON with, for each list, the number of cells, of proteins, of proteins
with at least 10 cells and the cells per class (by name), plus the proteins
shared between each pair of lists.  Exits 1 when a protein spans two splits or
a line is bad (label outside the class table, duplicate, malformed), 0 otherwise,
2 when a list cannot be read.  A protein is the plate folder plus the first
dash-separated field of the file name.

The other inputs of a run can be checked in the same call, before any long step uses them
(`make reproduce` does): --transfer LIST... (the transfer set's lists, with its class table),
--noncells FILE (the non-cell filter's list: validation cells of the given lists), --mixed TABLE
(proteins with two compartments: their crops next to the table, in no split list).  A bad one
stops the check with one line naming the file and line (exit 2).

With --result DIR, also writes DIR/result.json describing the archive's cells for the report
(its first section): cells and proteins per split, and what the published archive does not
hold (non-cell labels, proteins with two compartments, CellProfiler features) with the option
that supplies each.

Example:
  python data_prep/check_splits.py ../shared/deepyeast-splits/HOwt_{train,val,test}.txt
"""

import json
import os
import sys

from deepyeast import constants, launcher


def _split_name(path):
    name = os.path.basename(path).rsplit(".", 1)[0]
    return name[len(constants.LIST_PREFIX):] if name.startswith(constants.LIST_PREFIX) else name


def options(p):
    p.add_argument("lists", nargs="+", type=launcher.existing_file, help="split list files (TRAIN VAL TEST)")
    p.add_argument("--classes", choices=("auto",) + tuple(sorted(constants.CLASS_SETS)), default="auto",
                   help="class table: main (12), transfer (4), or auto by file name (default)")
    p.add_argument("--result", metavar="DIR", help="also write DIR/result.json describing the archive's cells")
    more = p.add_argument_group("other inputs of a run, checked before its first long step")
    more.add_argument("--transfer", nargs="+", default=(), metavar="LIST", type=launcher.existing_file,
                      help="the transfer set's split lists (HOwt_transfer_*.txt)")
    more.add_argument("--noncells", metavar="FILE", type=launcher.existing_file,
                      help="non-cell list: archive-relative paths of validation cells")
    more.add_argument("--mixed", metavar="TABLE", type=launcher.existing_file,
                      help="proteins with two compartments (protein,compartment_a,compartment_b)")


def check_other_inputs(args, paths):
    """InputError (file and line) for a bad transfer list, non-cell list or mixed-protein table."""
    from deepyeast.data.lists import check_splits, mixed_protein_cells, read_split_list

    if args.transfer:
        transfer = {_split_name(p): p for p in args.transfer}
        report, ok = check_splits(transfer, constants.CLASS_SETS["transfer"])
        if not ok:
            raise launcher.InputError("transfer lists: " + "; ".join(report["errors"][:5]))
    if args.noncells:
        from deepyeast.analysis.quality_filter import read_noncell_list

        val = [p for k, p in paths.items() if k == "val"]
        val_paths = {rel for rel, _ in read_split_list(val[0])[0]} if val else None
        read_noncell_list(args.noncells, val_paths, val[0] if val else "the validation split")
    if args.mixed:
        mixed_protein_cells(args.mixed, not_in=list(paths.values()))


def run(args):
    from deepyeast.data.lists import check_splits

    names = None if args.classes == "auto" else constants.CLASS_SETS[args.classes]
    paths = {}
    for p in args.lists:
        key = _split_name(p)
        while key in paths:
            key += "'"
        paths[key] = p
    report, ok = check_splits(paths, names)
    check_other_inputs(args, paths)
    print(json.dumps(report, indent=1))
    if ok and args.result:
        from deepyeast.data.lists import write_archive_result

        write_archive_result(args.result, report, command=args.command)
    if not ok:
        print("FAILED: " + "; ".join(report["errors"][:10]), file=sys.stderr)
    return launcher.EXIT_OK if ok else launcher.EXIT_CHECK_FAILED


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
