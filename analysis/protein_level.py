#!/usr/bin/env python3
"""Protein-level localisation from cell populations (Dirichlet posterior, MAP call).

Same as ``deepyeast protein-level``: both run deepyeast/commands/protein_level.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import protein_level as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
