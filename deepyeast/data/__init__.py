"""Data in and out: micrographs, segmentation, crops (see the package layout in the README)."""
