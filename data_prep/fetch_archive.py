#!/usr/bin/env python3
"""Download the published DeepYeast data (split lists and image archives) with md5 checks.

Same as ``deepyeast fetch-archive``: both run deepyeast/commands/fetch_archive.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import fetch_archive as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
