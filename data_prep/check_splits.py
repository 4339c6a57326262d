#!/usr/bin/env python3
"""Check DeepYeast split lists: counts, and no protein in two splits.

Prints JSON with, for each list, the number of cells, of proteins, of proteins
with at least 10 cells and the cells per class (by name), plus the proteins
shared between each pair of lists.  Exits 1 when a protein spans two splits or
a line is bad (label outside the class table, duplicate, malformed), 0 otherwise.
A protein is the plate folder plus the first dash-separated field of the file name.

Example:
  python data_prep/check_splits.py ../shared/deepyeast-splits/HOwt_{train,val,test}.txt
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.data.lists import check_splits
from deepyeast.constants import CLASS_NAMES, TRANSFER_CLASS_NAMES  # noqa: E402
from deepyeast.utils.io import InputError  # noqa: E402


def _split_name(path):
    name = os.path.basename(path).rsplit(".", 1)[0]
    return name[len("HOwt_"):] if name.startswith("HOwt_") else name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lists", nargs="+", help="split list files (TRAIN VAL TEST)")
    parser.add_argument("--classes", choices=("auto", "main", "transfer"), default="auto",
                        help="class table: main (12), transfer (4), or auto by file name (default)")
    args = parser.parse_args(argv)
    names = {"auto": None, "main": CLASS_NAMES, "transfer": TRANSFER_CLASS_NAMES}[args.classes]
    paths = {}
    for p in args.lists:
        key = _split_name(p)
        while key in paths:
            key += "'"
        paths[key] = p
    try:
        report, ok = check_splits(paths, names)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    if not ok:
        print("FAILED: " + "; ".join(report["errors"][:10]), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
