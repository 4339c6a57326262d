#!/usr/bin/env python3
"""The paper's Results item by item, ours beside theirs: one report section in the paper's order.

Same as ``deepyeast paper-results``: both run deepyeast/commands/paper_results.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import paper_results as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
