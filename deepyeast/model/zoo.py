"""The Caffe model-zoo folder: ``models/<name>/`` beside the package in a checkout.

It holds the DeepYeast prototxts (``train_val``, ``deploy``, the solvers) and their readme.
The library finds it relative to the package's own folder (an editable install or the
checkout itself); ``$DEEPYEAST_MODELS`` points elsewhere (e.g. a copy next to an installed
package).  Nothing here depends on the current directory.
"""

import os

from deepyeast.caffe.root import PACKAGE_HOME
from deepyeast.utils.io import InputError

__all__ = ["MODELS_ENV", "DEEPYEAST", "zoo_dir", "zoo_file"]

MODELS_ENV = "DEEPYEAST_MODELS"
DEEPYEAST = "deepyeast"
"""Name of the DeepYeast model's folder in the zoo."""


def zoo_dir():
    """The model-zoo folder: ``$DEEPYEAST_MODELS``, else ``models/`` beside the package."""
    return os.environ.get(MODELS_ENV) or os.path.join(PACKAGE_HOME, "models")


def zoo_file(filename, model=DEEPYEAST):
    """Path of ``models/<model>/<filename>`` (e.g. ``deploy.prototxt``); InputError naming it when absent."""
    path = os.path.join(zoo_dir(), model, filename)
    if not os.path.isfile(path):
        raise InputError(f"{path}: not found; the model zoo folder (models/ of the checkout) is not beside "
                         f"the package here: set ${MODELS_ENV} to it or give the prototxt explicitly")
    return path
