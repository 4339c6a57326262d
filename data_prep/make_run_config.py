#!/usr/bin/env python3
"""Write a run folder's train_val.prototxt and solver.prototxt from models/deepyeast/.

Same as ``deepyeast run-config``: both run deepyeast/commands/make_run_config.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import make_run_config as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
