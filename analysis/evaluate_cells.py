#!/usr/bin/env python3
"""Per-cell evaluation of a predictions table (paper Figure 2A, 2B, 2D).

Same as ``deepyeast evaluate-cells``: both run deepyeast/commands/evaluate_cells.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import evaluate_cells as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
