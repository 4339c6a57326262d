"""The Caffe model-zoo folder: ``models/<name>/`` beside the package in a checkout.

It holds the DeepYeast prototxts (``train_val``, ``deploy``, the solvers) and their readme.
The library finds it relative to the package's own folder: ``models/`` beside the package (the
checkout itself, an editable install), or the copy a built wheel carries inside the package
(``deepyeast/models/``, put there by ``setup.py``); ``$DEEPYEAST_MODELS`` points elsewhere.
Nothing here depends on the current directory.
"""

import os

from deepyeast.caffe.root import PACKAGE_HOME
from deepyeast.utils.io import InputError

__all__ = ["MODELS_ENV", "DEEPYEAST", "PACKAGED_ZOO", "zoo_dir", "zoo_file"]

MODELS_ENV = "DEEPYEAST_MODELS"
DEEPYEAST = "deepyeast"
"""Name of the DeepYeast model's folder in the zoo."""


PACKAGED_ZOO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
"""The model zoo inside an installed (non-editable) package; absent in a checkout."""


def zoo_dir():
    """The model-zoo folder: ``$DEEPYEAST_MODELS``, else the installed package's own copy, else
    ``models/`` beside the package."""
    if os.environ.get(MODELS_ENV):
        return os.environ[MODELS_ENV]
    return PACKAGED_ZOO if os.path.isdir(PACKAGED_ZOO) else os.path.join(PACKAGE_HOME, "models")


def zoo_file(filename, model=DEEPYEAST):
    """Path of ``models/<model>/<filename>`` (e.g. ``deploy.prototxt``); InputError naming it when absent."""
    path = os.path.join(zoo_dir(), model, filename)
    if not os.path.isfile(path):
        raise InputError(f"{path}: not found; the model zoo folder (models/ of the checkout) is not beside "
                         f"the package here: set ${MODELS_ENV} to it or give the prototxt explicitly")
    return path
