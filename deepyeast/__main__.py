"""``python -m deepyeast ACTION ...``: the caffe-like command (see :mod:`deepyeast.engine.cli`)."""

import sys

from deepyeast.engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
