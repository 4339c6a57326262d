#!/usr/bin/env python3
"""Download the authors' trained Keras DeepYeast weights, md5-checked.

Same as ``deepyeast fetch-weights``: both run deepyeast/commands/fetch_weights.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import fetch_weights as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
