#!/usr/bin/env python3
"""Write the self-contained HTML report and metrics.json of a run folder.

Same as ``deepyeast report``: both run deepyeast/commands/make_report.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import make_report as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
