"""Features written batch by batch, so memory stays flat whatever the number of cells.

Two writers that both forward paths use -- our engine (:mod:`deepyeast.analysis.predict`) and
real pycaffe (:mod:`deepyeast.caffe.pycaffe_forward`, which runs with the Caffe root's Python 3.9
and numpy 1.19 and imports this file as a sibling module: numpy only, nothing from deepyeast):

* :class:`NpyWriter`: a float32 ``N x D`` ``.npy`` file whose header is written first and whose
  rows are appended with plain writes, batch after batch (no memory map: the written pages are
  not kept mapped, so a step's resident memory does not grow with the file).
* :class:`TopActivations`: for every channel of a spatial blob, the ``k`` cells where the channel
  fires most, each with the position of its strongest unit -- exactly what the activating-patch
  search of the interpretation needs (:func:`deepyeast.analysis.interpret.patches.top_activating_units`
  on the whole maps gives the same cells, positions and values), in ``C x k`` numbers instead of
  the blob's ``N x C x H x W``.  Saved as ``<blob>.top.npz``: ``value`` float32, ``cell`` int64
  (row in ``paths.txt``), ``row``, ``col`` int32, each ``C x k``, highest value first; ties
  keep the lower cell.
"""

import os

import numpy as np

TOP_SUFFIX = ".top.npz"
"""File suffix of a blob's per-channel top activations (:class:`TopActivations`)."""
TOP_K = 16
"""Cells kept per channel (the interpretation shows 8 patches per neuron)."""


class NpyWriter:
    """Write ``path`` as a ``.npy`` array of ``n_rows`` rows of ``row_shape``, rows appended in order.

    ``write(rows)`` appends ``rows`` (``m x row_shape``); ``close()`` checks that exactly
    ``n_rows`` rows came and closes the file.  The result is byte-identical to
    ``np.save(path, whole_array)`` (format 1.0 header, C order).  Use as a context manager;
    on an exception the partial file is removed.
    """

    def __init__(self, path, n_rows, row_shape, dtype=np.float32):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.shape = (int(n_rows),) + tuple(int(d) for d in np.atleast_1d(row_shape))
        self.rows = 0
        self._file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(self._file, header)

    def write(self, rows):
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path}: rows of shape {rows.shape[1:]}, expected {self.shape[1:]}")
        if self.rows + rows.shape[0] > self.shape[0]:
            raise ValueError(f"{self.path}: more than the {self.shape[0]} rows announced")
        self._file.write(rows.tobytes())
        self.rows += rows.shape[0]

    def close(self):
        if self._file.closed:
            return
        self._file.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows} rows written of the {self.shape[0]} announced")

    def abort(self):
        self._file.close()
        if os.path.exists(self.path):
            os.remove(self.path)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:
            self.abort()
        return False


class TopActivations:
    """Running per-channel top ``k`` of a spatial blob over cells fed in order, batch by batch.

    ``update(maps)``: ``maps`` float ``B x C x H x W``, the next ``B`` cells.  A cell's score for
    a channel is the maximum of its map; its position the first maximal unit in row-major order
    (numpy's ``argmax``).  Channels keep the ``k`` highest scores over all cells seen, ties to
    the lower cell -- the same as a stable descending sort of every cell's score.
    """

    def __init__(self, k=TOP_K):
        self.k = int(k)
        self.n = 0
        self.value = self.cell = self.pos = None
        self.width = None

    def update(self, maps):
        maps = np.asarray(maps)
        b, c, h, w = maps.shape
        flat = maps.reshape(b, c, h * w)
        pos = flat.argmax(axis=2).T                                       # C x B
        value = np.take_along_axis(flat, pos.T[:, :, None], axis=2)[:, :, 0].T.astype(np.float32)
        cell = np.broadcast_to(np.arange(self.n, self.n + b, dtype=np.int64), (c, b))
        if self.value is not None:
            if self.value.shape[0] != c or self.width != w:
                raise ValueError(f"maps of {c} channels x width {w} after {self.value.shape[0]} x {self.width}")
            # the kept cells precede the batch's: a stable sort keeps ties in cell order
            value = np.concatenate([self.value, value], axis=1)
            cell = np.concatenate([self.cell, cell], axis=1)
            pos = np.concatenate([self.pos, pos], axis=1)
        order = np.argsort(-value, axis=1, kind="stable")[:, :self.k]
        self.value = np.take_along_axis(value, order, axis=1)
        self.cell = np.take_along_axis(cell, order, axis=1)
        self.pos = np.take_along_axis(pos, order, axis=1)
        self.width = w
        self.n += b

    def arrays(self):
        """``dict(value float32, cell int64, row int32, col int32)``, each ``C x min(k, cells)``."""
        if self.value is None:
            raise ValueError("no cells were fed")
        return {"value": self.value.astype(np.float32), "cell": self.cell.astype(np.int64),
                "row": (self.pos // self.width).astype(np.int32), "col": (self.pos % self.width).astype(np.int32)}

    def save(self, path):
        """Write ``path`` (``<blob>.top.npz``, uncompressed)."""
        with open(path, "wb") as f:
            np.savez(f, **self.arrays())
