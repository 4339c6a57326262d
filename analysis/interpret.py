#!/usr/bin/env python3
"""What the DeepYeast layers encode (paper Figure 3).

Same as ``deepyeast interpret``: both run deepyeast/commands/interpret.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import interpret as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
