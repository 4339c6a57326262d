#!/usr/bin/env python3
"""Export a DeepYeast model bundle as a bioimage.io model package (ilastik, deepImageJ, QuPath, napari).

Same as ``deepyeast export-bioimageio``: both run deepyeast/commands/export_bioimageio.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import export_bioimageio as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
