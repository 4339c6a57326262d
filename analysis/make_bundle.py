#!/usr/bin/env python3
"""Write a run's trained model as a bundle folder (Caffe model-zoo style, with bundle.json).

Same as ``deepyeast bundle``: both run deepyeast/commands/make_bundle.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import make_bundle as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
