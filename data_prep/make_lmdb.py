#!/usr/bin/env python3
"""Convert an archive's split lists into Caffe LMDBs, the training mean and manifests.

Same as ``deepyeast make-lmdb``: both run deepyeast/commands/make_lmdb.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import make_lmdb as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
