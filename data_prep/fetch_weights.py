#!/usr/bin/env python3
"""Download the authors' trained Keras DeepYeast weights, md5-checked.

  python data_prep/fetch_weights.py [--dest DIR]

Fetches deepyeast-weights-22-0.902.hdf5 (the v0.1 release of github.com/tanelp/deepyeast,
md5 c42d8788ba006f9c82725fffe3b096b6, 0.89 test accuracy reported by the authors) into
DIR (default data/keras).  A file already there with the right md5 is not fetched again;
an interrupted download resumes (HTTP Range) on the next run; a file with another md5 is
removed and nothing appears under the final name.  Offline, it stops with a message
saying where to put the file by hand.

Then:  python analysis/convert_keras_weights.py DIR/deepyeast-weights-22-0.902.hdf5 models/keras

Exit codes: 0 done; 3 download failed (offline, HTTP error, md5 mismatch).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.archive import FetchError, _print_progress, download  # noqa: E402
from deepyeast.model.keras import KERAS_WEIGHTS_FILE, KERAS_WEIGHTS_MD5, KERAS_WEIGHTS_URL  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", default=os.path.join("data", "keras"), help="folder to download into (default %(default)s)")
    ap.add_argument("--url", default=KERAS_WEIGHTS_URL, help="where to fetch it (a mirror; default: the release)")
    ap.add_argument("--md5", default=KERAS_WEIGHTS_MD5, help="expected md5 (default: the released file's)")
    ap.add_argument("--timeout", type=float, default=60, help="network timeout, seconds")
    args = ap.parse_args(argv)
    dest = os.path.join(args.dest, os.path.basename(args.url.split("?", 1)[0]) or KERAS_WEIGHTS_FILE)
    try:
        download(args.url, dest, args.md5, timeout=args.timeout, progress=_print_progress(os.path.basename(dest)))
    except FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
