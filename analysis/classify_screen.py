#!/usr/bin/env python3
"""Classify a new screen: raw two-channel micrographs -> cells -> per-protein localisation calls.

Same as ``deepyeast classify``: both run deepyeast/commands/classify_screen.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import classify_screen as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
