#!/usr/bin/env python3
"""Compare two classified screens: which proteins change compartment, with a false-discovery rate that holds.

Same as ``deepyeast compare``: both run deepyeast/commands/compare_screens.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import compare_screens as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
