#!/usr/bin/env python3
"""Generate the synthetic yeast screen (the project's embedded default data set).

Same as ``deepyeast synthetic``: both run deepyeast/commands/make_synthetic.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import make_synthetic as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
