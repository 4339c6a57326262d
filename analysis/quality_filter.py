#!/usr/bin/env python3
"""Non-cell filter as in the paper: a random forest separating cells from non-cells.

Same as ``deepyeast quality-filter``: both run deepyeast/commands/quality_filter.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import quality_filter as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
