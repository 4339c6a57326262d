"""Data layers: ``Input`` (tops fed by the caller), ``DummyData`` (tops from fillers) and
Caffe's ``Data`` layer: batches from an LMDB of ``Datum`` records, with ``transform_param``.

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

import hashlib
import os

import numpy as np
import torch

from deepyeast.caffe.blobs import read_mean_binaryproto
from deepyeast.caffe.lmdb import read_datum_lmdb
from deepyeast.utils.io import InputError
from deepyeast.caffe import caffe_pb2
from deepyeast.engine.fillers import fill
from deepyeast.engine.layers.base import Layer, register_layer, shape_str

__all__ = ["InputLayer", "DummyDataLayer", "DataLayer", "load_lmdb_tensor", "lmdb_content_digest"]


def _blob_shape_list(shape_msg):
    return tuple(int(d) for d in shape_msg.dim)


@register_layer
class InputLayer(Layer):
    """``Input``: tops are fed by the caller (``Net.forward(name=array)``), zeros until then."""

    caffe_type = "Input"
    param_fields = {"input_param": {"shape"}}
    n_bottoms = (0, 0)
    n_tops = (1, None)
    has_data_source = True

    def setup(self, bottom_shapes):
        shapes = [_blob_shape_list(s) for s in self.lp.input_param.shape]
        n = len(self.top_names)
        if len(shapes) == 1:
            shapes = shapes * n
        if len(shapes) != n:
            raise self.error(f"input_param has {len(shapes)} shapes for {n} tops; give one shape or one per top")
        self.values = [None] * n
        return shapes

    def set_input(self, index, value):
        """Store the value of top ``index`` (array-like, shape checked beyond axis 0)."""
        name = self.top_names[index]
        want = self.top_shapes[index]
        t = torch.as_tensor(value)
        if t.dim() != len(want) or tuple(t.shape[1:]) != tuple(want[1:]):
            raise InputError(f'input "{name}": got shape {shape_str(t.shape)}, the net expects '
                             f"{shape_str(want)} (axis 0, the batch size, may differ)")
        self.values[index] = t.to(device=self.ctx.device, dtype=torch.float32)

    def forward(self, bottoms):
        out = []
        for i, v in enumerate(self.values):
            if v is None:
                v = torch.zeros(self.top_shapes[i], device=self.ctx.device)
                self.values[i] = v
            out.append(v)
        return out


@register_layer
class DummyDataLayer(Layer):
    """``DummyData``: tops filled by fillers; constant fillers once, others at every forward."""

    caffe_type = "DummyData"
    param_fields = {"dummy_data_param": {"data_filler", "shape", "num", "channels", "height", "width"}}
    n_bottoms = (0, 0)
    n_tops = (1, None)
    has_data_source = True

    def setup(self, bottom_shapes):
        p = self.lp.dummy_data_param
        n = len(self.top_names)
        legacy = len(p.num) + len(p.channels) + len(p.height) + len(p.width)
        if p.shape and legacy:
            raise self.error("give dummy_data_param.shape or num/channels/height/width, not both")
        if p.shape:
            shapes = [_blob_shape_list(s) for s in p.shape]
        else:
            lens = {len(p.num), len(p.channels), len(p.height), len(p.width)}
            if len(lens) != 1:
                raise self.error("num, channels, height and width must be given equally often")
            shapes = [(a, b, c, d) for a, b, c, d in zip(p.num, p.channels, p.height, p.width)]
        if len(shapes) == 1:
            shapes = shapes * n
        if len(shapes) != n:
            raise self.error(f"{len(shapes)} shapes for {n} tops; give one shape or one per top")
        fillers = list(p.data_filler)
        if not fillers:
            fillers = [caffe_pb2.FillerParameter()]
        if len(fillers) == 1:
            fillers = fillers * n
        if len(fillers) != n:
            raise self.error(f"{len(fillers)} data_fillers for {n} tops; give 0, 1 or one per top")
        self.fillers = fillers
        self.values = [None] * n
        return shapes

    def forward(self, bottoms):
        out = []
        for i, f in enumerate(self.fillers):
            if self.values[i] is None or f.type != "constant":
                t = fill(self.top_shapes[i], f, self.ctx.filler_generator, where=f"{self.where()} top {i}")
                self.values[i] = t.to(self.ctx.device)
            out.append(self.values[i])
        return out


# ====================================================================== LMDB

_CACHE = {}
_DIGESTS = {}  # (path, mtime) -> sha256 of the records, for snapshots' fingerprints


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
        images = np.ascontiguousarray(images)
        digest = hashlib.sha256(memoryview(images).cast("B"))
        digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
        _CACHE.clear()  # keep only the latest database to bound memory
        _CACHE[key] = (torch.from_numpy(images), torch.from_numpy(labels))
        _DIGESTS[key] = digest.hexdigest()
    return _CACHE[key]


def lmdb_content_digest(path):
    """sha256 of what a Data layer reads from the LMDB ``path`` (pixels in read order, then labels),
    computed when :func:`load_lmdb_tensor` loaded it: what a snapshot records it was trained on."""
    path = os.path.abspath(path)
    key = (path, os.path.getmtime(os.path.join(path, "data.mdb")))
    if key not in _DIGESTS:
        load_lmdb_tensor(path)
    return _DIGESTS[key]


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
        if self.ctx.data_shape is not None:  # shape questions only (Net.for_shapes): no record is read
            return self._shapes_only(tuple(int(d) for d in self.ctx.data_shape))
        images, labels = load_lmdb_tensor(self.source)
        self.records_digest = lmdb_content_digest(self.source)
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
        self.mean_digest = (hashlib.sha256(mean.numpy().astype("<f4").tobytes()).hexdigest()
                            if mean is not None else None)
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

    def _shapes_only(self, item_shape):
        c, h, w = item_shape
        self.crop = int(self.lp.transform_param.crop_size)
        oh, ow = (self.crop, self.crop) if self.crop else (h, w)
        self.item_shape = (c, h, w)
        self.n_records = 0
        return [(self.batch_size, c, oh, ow)] + ([(self.batch_size,)] if len(self.top_names) == 2 else [])

    def fingerprint(self):
        """What this layer feeds the net, as digests: the records (pixels and labels in read order)
        and the mean; with the transform settings in the net's own fingerprint, a changed data set
        (or mean) changes it wherever its files are."""
        return {"records_sha256": self.records_digest, "mean_sha256": self.mean_digest}

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
