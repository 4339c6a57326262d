"""napari reader of micrographs: the formats ``deepyeast classify`` reads (TIFF, OME-TIFF, PNG, and an
OME-Zarr image: a ``.zarr`` folder holding one NGFF image, or an image series of one image)."""

import os

__all__ = ["napari_get_reader", "read_micrograph_layers", "EXTENSIONS"]

EXTENSIONS = (".tif", ".tiff", ".png")
"""File endings the reader takes (the manifest's ``filename_patterns``, with ``*.zarr`` folders)."""
ZARR = ".zarr"


def napari_get_reader(path):
    """npe2 reader contribution: :func:`read_micrograph_layers` for one micrograph file, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    if os.path.isdir(path):
        return read_micrograph_layers if path.rstrip("/\\").lower().endswith(ZARR) else None
    if not path.lower().endswith(EXTENSIONS):
        return None
    return read_micrograph_layers


def read_micrograph_layers(path):
    """One micrograph file (or OME-Zarr image folder) -> napari layer data: one image layer per channel, as
    stored (``C x H x W`` split along C, the file's own dtype), named ``<file> [c<i>]``.  Bad files (and a
    plate, whose fields ``deepyeast classify`` reads) raise the command's ``InputError`` (napari shows its
    one line)."""
    from deepyeast.data.micrographs import MAX_PIXELS, read_channels
    from deepyeast.data.omezarr import read_image, resolve

    if isinstance(path, (list, tuple)):
        (path,) = path
    path = os.fspath(path).rstrip("/\\")
    data = read_image(resolve(path)["path"], MAX_PIXELS) if os.path.isdir(path) else read_channels(path)
    stem = os.path.basename(os.fspath(path))
    names = [f"{stem} [c{i}]" for i in range(data.shape[0])]
    meta = {"name": names if len(names) > 1 else names[0], "metadata": {"path": os.fspath(path)}}
    if len(names) > 1:
        meta["channel_axis"] = 0
        return [(data, meta, "image")]
    return [(data[0], meta, "image")]
