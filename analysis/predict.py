#!/usr/bin/env python3
"""Per-cell predictions (and layer features) of a trained DeepYeast net.

Same as ``deepyeast predict``: both run deepyeast/commands/predict.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import predict as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
