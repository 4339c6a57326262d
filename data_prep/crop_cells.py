#!/usr/bin/env python3
"""Cut 64x64 single-cell crops from two-channel micrographs into the archive layout.

Same as ``deepyeast crop``: both run deepyeast/commands/crop_cells.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import crop_cells as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
