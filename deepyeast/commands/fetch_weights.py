"""Download the authors' trained Keras DeepYeast weights, md5-checked.

Fetches deepyeast-weights-22-0.902.hdf5 (the v0.1 release of github.com/tanelp/deepyeast,
md5 c42d8788ba006f9c82725fffe3b096b6, 0.89 test accuracy reported by the authors) into
--out DIR (default data/keras) and prints its path.  A file already there with the right
md5 is not fetched again; an interrupted download resumes (HTTP Range) on the next run; a
file with another md5 is removed and nothing appears under the final name.  Offline, it
stops (exit 3) with a message saying where to put the file by hand.

Example:
  python data_prep/fetch_weights.py --out data/keras
  python analysis/convert_keras_weights.py data/keras/deepyeast-weights-22-0.902.hdf5 --out models/keras
"""

import os

from deepyeast import launcher
from deepyeast.model.convert_keras_weights import KERAS_WEIGHTS_FILE, KERAS_WEIGHTS_MD5, KERAS_WEIGHTS_URL


def options(p):
    launcher.add(p, "out", metavar="DIR", default=os.path.join("data", "keras"),
                 help="folder to download into (default %(default)s)")
    p.add_argument("--url", default=KERAS_WEIGHTS_URL, help="where to fetch it (a mirror; default: the release)")
    p.add_argument("--md5", default=KERAS_WEIGHTS_MD5, help="expected md5 (default: the released file's)")
    p.add_argument("--timeout", type=float, default=60, help="network timeout, seconds")


def run(args):
    from deepyeast.data.download import download, download_progress

    dest = os.path.join(args.out, os.path.basename(args.url.split("?", 1)[0]) or KERAS_WEIGHTS_FILE)
    download(args.url, dest, args.md5, timeout=args.timeout, progress=download_progress(os.path.basename(dest)))
    print(dest)


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
