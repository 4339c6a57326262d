"""Data: split lists and crops, micrographs and cell segmentation, LMDB bundles, the published archive,
the synthetic screen."""
