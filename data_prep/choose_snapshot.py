#!/usr/bin/env python3
"""Copy the snapshot a run uses (final, or lowest validation loss) to OUT, atomically.

Same as ``deepyeast choose-snapshot``: both run deepyeast/commands/choose_snapshot.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import choose_snapshot as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
