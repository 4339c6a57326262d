"""napari reader of micrographs: the formats ``deepyeast classify`` reads (TIFF, OME-TIFF, PNG)."""

import os

__all__ = ["napari_get_reader", "read_micrograph_layers", "EXTENSIONS"]

EXTENSIONS = (".tif", ".tiff", ".png")
"""File endings the reader takes (the manifest's ``filename_patterns``)."""


def napari_get_reader(path):
    """npe2 reader contribution: :func:`read_micrograph_layers` for one micrograph file, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    if not path.lower().endswith(EXTENSIONS) or os.path.isdir(path):
        return None
    return read_micrograph_layers


def read_micrograph_layers(path):
    """One micrograph file -> napari layer data: one image layer per channel, as stored (``C x H x W``
    split along C, the file's own dtype), named ``<file> [c<i>]``.  Bad files raise the command's
    ``InputError`` (napari shows its one line)."""
    from deepyeast.data.micrographs import read_channels

    if isinstance(path, (list, tuple)):
        (path,) = path
    data = read_channels(os.fspath(path))
    stem = os.path.basename(os.fspath(path))
    names = [f"{stem} [c{i}]" for i in range(data.shape[0])]
    meta = {"name": names if len(names) > 1 else names[0], "metadata": {"path": os.fspath(path)}}
    if len(names) > 1:
        meta["channel_axis"] = 0
        return [(data, meta, "image")]
    return [(data[0], meta, "image")]
