#!/usr/bin/env python3
"""Check DeepYeast split lists: counts, and no protein in two splits.

Same as ``deepyeast check-splits``: both run deepyeast/commands/check_splits.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import check_splits as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
