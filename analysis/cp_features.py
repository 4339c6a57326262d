#!/usr/bin/env python3
"""Compute CellProfiler-style features (~430 per cell) of the crops in a split list.

Same as ``deepyeast cp-features``: both run deepyeast/commands/cp_features.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import cp_features as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
