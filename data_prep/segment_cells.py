#!/usr/bin/env python3
"""Find the cells in each micrograph of a screen and write label masks.

Same as ``deepyeast segment``: both run deepyeast/commands/segment_cells.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import segment_cells as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
