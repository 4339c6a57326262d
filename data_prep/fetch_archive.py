#!/usr/bin/env python3
"""Download the published DeepYeast data (split lists and image archives) with md5 checks.

Writes into DEST: the eight HOwt_*.txt lists, main.tar.gz unpacked into DEST/main
and transfer.tar.gz into DEST/transfer.  Files already present with the right md5
are not downloaded again; an interrupted download resumes (HTTP Range) on the
next run; archive members that would land outside DEST are refused.  Offline, it
stops with a message saying where to put the files by hand.

Example:
  python data_prep/fetch_archive.py ~/data/deepyeast            # everything (~1.5 GB)
  python data_prep/fetch_archive.py ~/data/deepyeast --only lists
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.data.download import ARCHIVE_BASE_URL, FetchError, fetch_archive


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", help="folder to download into")
    parser.add_argument("--only", nargs="+", choices=("lists", "main", "transfer"),
                        default=("lists", "main", "transfer"), help="parts to fetch (default: all)")
    parser.add_argument("--base-url", default=ARCHIVE_BASE_URL, help="mirror of the data (default: %(default)s)")
    parser.add_argument("--remove-tarballs", action="store_true", help="delete the .tar.gz files after unpacking")
    parser.add_argument("--timeout", type=float, default=60, help="network timeout, seconds")
    args = parser.parse_args(argv)
    try:
        out = fetch_archive(args.dest, args.only, args.base_url, not args.remove_tarballs, args.timeout)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
