#!/usr/bin/env python3
"""Transfer learning to the 4 unseen compartments with few examples (paper Figures 4B, 4C, S6).

Same as ``deepyeast transfer``: both run deepyeast/commands/transfer.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import transfer as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
