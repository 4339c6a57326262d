#!/usr/bin/env python3
"""Random-forest baseline on CellProfiler features (R randomForest through rpy2).

Same as ``deepyeast random-forest``: both run deepyeast/commands/random_forest.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import random_forest as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
