#!/usr/bin/env python3
"""Convert the authors' Keras DeepYeast weights (legacy HDF5) into a Caffe model bundle.

Same as ``deepyeast convert-keras``: both run deepyeast/commands/convert_keras_weights.py,
with the same options and exit codes.
"""

from deepyeast import launcher
from deepyeast.commands import convert_keras_weights as step

if __name__ == "__main__":
    launcher.main(step.__doc__, step.options, step.run)
