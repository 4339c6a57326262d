"""The trained model as a thing to hand on: run bundles, exports (the model-zoo folder ``models/`` is
found by :mod:`deepyeast.caffe.zoo`).

* :mod:`deepyeast.model.bundle`     -- ``RUN/model/`` bundles (deploy net, weights, mean, classes,
  readme, ``bundle.json``): write, read and validate, classify crops;
* :mod:`deepyeast.model.convert_keras_weights`      -- the authors' Keras HDF5 weights converted into a bundle;
* :mod:`deepyeast.model.export_bioimageio` -- a bundle exported as a bioimage.io model package.
"""

from deepyeast.model.bundle import Bundle, predict_crops, read_bundle, write_bundle

__all__ = ["Bundle", "predict_crops", "read_bundle", "write_bundle"]
