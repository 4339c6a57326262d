"""DeepYeast: Caffe-faithful replication of Parnamaa & Parts (G3, 2017).

The package holds the logic shared by the step scripts in ``data_prep/`` and
``analysis/``.  Importing it is cheap: submodules load torch, lmdb or rpy2
only when imported themselves.
"""

__version__ = "0.1.0"
