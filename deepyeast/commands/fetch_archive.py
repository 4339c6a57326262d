"""Download the published DeepYeast data (split lists and image archives) with md5 checks.

Writes into --out DIR: the eight HOwt_*.txt lists, main.tar.gz unpacked into DIR/main
and transfer.tar.gz into DIR/transfer.  Files already present with the right md5
are not downloaded again; an interrupted download resumes (HTTP Range) on the
next run; archive members that would land outside DIR are refused.  Offline, it
stops (exit 3) with a message saying where to put the files by hand.

Example:
  python data_prep/fetch_archive.py --out ~/data/deepyeast            # everything (~1.5 GB)
  python data_prep/fetch_archive.py --out ~/data/deepyeast --only lists
"""

import json

from deepyeast import launcher
from deepyeast.data.download import ARCHIVE_BASE_URL


def options(p):
    launcher.add_output_folder(p, "folder to download into")
    p.add_argument("--only", nargs="+", choices=("lists", "main", "transfer"),
                   default=("lists", "main", "transfer"), help="parts to fetch (default: all)")
    p.add_argument("--base-url", default=ARCHIVE_BASE_URL, help="mirror of the data (default: %(default)s)")
    p.add_argument("--remove-tarballs", action="store_true", help="delete the .tar.gz files after unpacking")
    p.add_argument("--timeout", type=float, default=60, help="network timeout, seconds")


def run(args):
    from deepyeast.data.download import fetch_archive

    out = launcher.output_folder(args)
    print(json.dumps(fetch_archive(out, args.only, args.base_url, not args.remove_tarballs, args.timeout), indent=1))


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
