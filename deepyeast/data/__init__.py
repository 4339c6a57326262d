"""Data: split lists and crops, micrographs, LMDB bundles, the published archive, the synthetic screen."""
