"""Caffe layers as torch modules, one file per layer family (as Caffe's ``src/caffe/layers``).

A layer type is a :class:`~deepyeast.engine.layers.base.Layer` subclass decorated with
:func:`~deepyeast.engine.layers.base.register_layer`; every module of this package is imported
here, so adding a layer type is adding (or extending) one file in this folder.  Nothing else
needs to know about it: :class:`deepyeast.engine.Net` builds, shapes and runs it, and every
shape question (blob shapes, receptive fields) is answered from its ``setup``.

=================  ==========================================================
``base.py``        ``Layer`` (the contract), ``register_layer``, ``LAYER_TYPES``
``data.py``        ``Input``, ``DummyData``, ``Data`` (LMDB with ``transform_param``)
``vision.py``      ``Convolution``, ``Pooling``
``common.py``      ``InnerProduct``, ``Flatten``, ``Concat``, ``Eltwise``, ``Split``
``normalization.py``  ``BatchNorm``, ``Scale``, ``Bias``
``neuron.py``      ``ReLU``, ``Sigmoid``, ``TanH``, ``Dropout``
``loss.py``        ``Softmax``, ``SoftmaxWithLoss``, ``Accuracy``
=================  ==========================================================
"""

import importlib
import pkgutil

from deepyeast.engine.layers.base import LAYER_TYPES, Layer, register_layer

__all__ = ["LAYER_TYPES", "Layer", "register_layer"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
