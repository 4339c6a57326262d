"""Caffe's ``Data`` layer: batches from an LMDB of ``Datum`` records, with ``transform_param``.

The whole database is read once into memory as uint8 N x C x H x W (on the
net's device when it fits; the DeepYeast training set is ~532 MB), so a batch
is an index computation and a few tensor ops on the device with no host sync.

Caffe's rules, reproduced:

* records are read sequentially in key order, wrapping around at the end;
  ``rand_skip`` skips a random number in [0, rand_skip] of records at start;
* per item: ``(pixel - mean) * scale`` where mean is ``mean_file`` (a full-size
  C x H x W image, cropped at the same offset as the data) or ``mean_value``
  (one value, or one per channel);
* ``crop_size``: random offset in TRAIN, centred ((H - crop) // 2) in TEST;
* ``mirror``: each item is flipped left-right with probability 1/2 (Caffe draws
  this in both phases whenever mirror is true);
* tops: data float32 N x C x h x w, label float32 (N,).
"""

import os

import numpy as np
import torch

from deepyeast.caffe.blobs import read_mean_binaryproto
from deepyeast.caffe.lmdb import read_datum_lmdb
from deepyeast.utils.io import InputError
from deepyeast.engine.layers import Layer, register_layer

__all__ = ["DataLayer", "load_lmdb_tensor"]

_CACHE = {}


def load_lmdb_tensor(path):
    """(images uint8 N x C x H x W, labels int64 N) of an LMDB, as CPU tensors (cached per path+mtime)."""
    path = os.path.abspath(path)
    try:
        stamp = os.path.getmtime(os.path.join(path, "data.mdb"))
    except OSError:
        raise InputError(f"{path}: no LMDB here (data.mdb missing)") from None
    key = (path, stamp)
    if key not in _CACHE:
        images, labels, _ = read_datum_lmdb(path)
        if images.dtype != np.uint8:
            raise InputError(f"{path}: Data layer records must hold uint8 pixels, got {images.dtype}")
        _CACHE.clear()  # keep only the latest database to bound memory
        _CACHE[key] = (torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))
    return _CACHE[key]


@register_layer
class DataLayer(Layer):
    """``Data`` (LMDB backend) with Caffe's ``transform_param``."""

    caffe_type = "Data"
    param_fields = {
        "data_param": {"source", "batch_size", "rand_skip", "backend", "prefetch"},
        "transform_param": {"scale", "mirror", "crop_size", "mean_file", "mean_value"},
    }
    n_bottoms = (0, 0)
    n_tops = (1, 2)
    has_data_source = True

    def setup(self, bottom_shapes):
        dp = self.lp.data_param
        tp = self.lp.transform_param
        if dp.backend != 1:
            raise self.error("data_param.backend: only LMDB is supported")
        if not dp.source:
            raise self.error("data_param.source is required")
        if not dp.batch_size:
            raise self.error("data_param.batch_size must be > 0")
        self.batch_size = int(dp.batch_size)
        self.source = os.path.join(self.ctx.root_dir, dp.source)
        images, labels = load_lmdb_tensor(self.source)
        self.n_records = int(images.shape[0])
        c, h, w = (int(s) for s in images.shape[1:])
        device = self.ctx.device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            on_device = images.numel() < 0.5 * free
        else:
            on_device = True
        self.images = images.to(device) if on_device else images
        self.labels = labels.to(device=device, dtype=torch.float32)
        self.scale = float(tp.scale)
        self.mirror = bool(tp.mirror)
        self.crop = int(tp.crop_size)
        if self.crop and (self.crop > h or self.crop > w):
            raise self.error(f"crop_size {self.crop} exceeds the records' size {h} x {w} ({self.source})")
        if tp.HasField("mean_file") and tp.mean_value:
            raise self.error("give transform_param.mean_file or mean_value, not both")
        mean = None
        if tp.HasField("mean_file"):
            mean_path = os.path.join(self.ctx.root_dir, tp.mean_file)
            mean = read_mean_binaryproto(mean_path)
            if mean.shape != (c, h, w):
                raise self.error(f"mean image {mean_path} has shape {mean.shape}, the records of "
                                 f"{self.source} are {(c, h, w)}")
            mean = torch.from_numpy(np.ascontiguousarray(mean))
        elif tp.mean_value:
            values = list(tp.mean_value)
            if len(values) != 1 and len(values) != c:
                raise self.error(f"transform_param.mean_value has {len(values)} values; give 1 or one per "
                                 f"channel ({c})")
            if len(values) == 1:
                values = values * c
            mean = torch.tensor(values, dtype=torch.float32).view(c, 1, 1).expand(c, h, w).contiguous()
        self.mean = mean.to(device) if mean is not None else None
        self.cursor = 0
        self.train = self.ctx.phase == "TRAIN"
        self.rng = torch.Generator(device=device)
        self.rng.manual_seed(self.ctx.layer_seed(self.name))
        if dp.rand_skip:
            skip = int(torch.randint(0, int(dp.rand_skip) + 1, (1,), generator=torch.Generator().manual_seed(
                self.ctx.layer_seed(self.name) + 1)).item())
            self.cursor = skip % self.n_records
        oh, ow = (self.crop, self.crop) if self.crop else (h, w)
        self.item_shape = (c, h, w)
        shapes = [(self.batch_size, c, oh, ow)]
        if len(self.top_names) == 2:
            shapes.append((self.batch_size,))
        return shapes

    # -- state for exact resume
    def state(self):
        return {"cursor": self.cursor, "rng": self.rng.get_state()}

    def set_state(self, state):
        self.cursor = int(state["cursor"]) % self.n_records
        self.rng.set_state(state["rng"])

    def forward(self, bottoms):
        device = self.ctx.device
        b = self.batch_size
        idx = (torch.arange(b, device=self.images.device) + self.cursor) % self.n_records
        self.cursor = (self.cursor + b) % self.n_records
        x = self.images.index_select(0, idx).to(device=device, non_blocking=True).to(torch.float32)
        if self.mean is not None:
            x = x - self.mean
        c, h, w = self.item_shape
        if self.crop:
            k = self.crop
            if self.train:
                hoff = torch.randint(0, h - k + 1, (b,), device=device, generator=self.rng)
                woff = torch.randint(0, w - k + 1, (b,), device=device, generator=self.rng)
                ar = torch.arange(k, device=device)
                rows = (hoff[:, None] + ar[None, :])  # b x k
                cols = (woff[:, None] + ar[None, :])
                bi = torch.arange(b, device=device)[:, None, None]
                x = x.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # b x k x k x c
                x = x.permute(0, 3, 1, 2).contiguous()
            else:
                ho, wo = (h - k) // 2, (w - k) // 2
                x = x[:, :, ho:ho + k, wo:wo + k].contiguous()
        if self.mirror:
            flip = torch.rand(b, device=device, generator=self.rng) < 0.5
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        if self.scale != 1.0:
            x = x * self.scale
        tops = [x]
        if len(self.top_names) == 2:
            tops.append(self.labels.index_select(0, idx.to(self.labels.device)))
        return tops
