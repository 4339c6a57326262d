"""Caffe layers as torch modules, with Caffe's exact forward semantics.

Every layer is built from a ``caffe_pb2.LayerParameter`` and the shapes of its
bottom blobs (Caffe's ``LayerSetUp`` + ``Reshape``): it creates its parameter
blobs in Caffe's order and shapes, computes its top shapes (so a net whose
shapes do not chain fails at construction, naming the layer and the shapes),
and rejects any parameter field it does not implement.

Gradients are torch autograd of the forward pass.  Where Caffe's backward is
not the exact derivative of its forward (the clamp in SoftmaxWithLoss, the
tie rule of Eltwise MAX), the forward is written (or, for SoftmaxWithLoss, a
small ``torch.autograd.Function``) so that autograd gives Caffe's gradient.

Blobs are float32 tensors in Caffe's N x C x H x W layout (a layer may hand
on channels-last strides; values and shapes are unchanged).
"""

import torch

from deepyeast.utils.io import InputError
from deepyeast.engine.fillers import fill

__all__ = ["Layer", "LAYER_TYPES", "register_layer", "FLT_MIN", "FLT_MAX", "shape_str", "blob_count",
           "in_weight_dtype", "compute_blobs"]

FLT_MIN = 1.1754943508222875e-38
FLT_MAX = 3.4028234663852886e+38

# LayerParameter fields every layer type accepts
_COMMON_FIELDS = {"name", "type", "bottom", "top", "phase", "loss_weight", "param", "blobs",
                  "propagate_down", "include", "exclude"}

LAYER_TYPES = {}


def register_layer(cls):
    """Class decorator: make ``cls`` the implementation of Caffe type ``cls.caffe_type``."""
    LAYER_TYPES[cls.caffe_type] = cls
    return cls


def shape_str(shape):
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def blob_count(shape, start=0, end=None):
    n = 1
    for s in tuple(shape)[start:end]:
        n *= int(s)
    return n


def in_weight_dtype(x, weight):
    """``x`` in the dtype of ``weight``: a net whose weights were cast (bf16 inference,
    engine/fold.py deploy_net) computes in that dtype.  Under autocast, autocast decides."""
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        return x.to(weight.dtype)
    return x


class _KeptCast(torch.autograd.Function):
    """A float32 parameter seen through its kept copy in the autocast dtype: forward hands the copy
    over (no cast), backward returns the gradient cast to float32 -- what autocast's own cast
    (``to``, whose backward is the same cast back) gives."""

    @staticmethod
    def forward(ctx, master, kept):
        return kept.detach()

    @staticmethod
    def backward(ctx, grad):
        return grad.to(torch.float32), None


def compute_blobs(layer, *blobs):
    """``blobs`` (parameter tensors of ``layer``, None passes through) as a product layer computes with
    them: unchanged, except under autocast of a lower precision, where a float32 blob comes as its copy
    in the autocast dtype, kept between forward passes and cast again only when the blob has changed
    (its version counter moved: an SGD update, loaded weights).  Autocast would cast it at every
    forward; the numbers are the same (one round-to-nearest-even cast of the same values, and the
    gradient cast back to float32 as autocast's cast gives it).  ``layer.ctx.keep_casts`` False
    (:attr:`deepyeast.engine.Net.keep_casts`) turns this off: autocast casts as before."""
    device = blobs[0].device.type
    if not torch.is_autocast_enabled(device) or not getattr(layer.ctx, "keep_casts", True):
        return blobs
    dtype = torch.get_autocast_dtype(device)
    cache = layer.__dict__.setdefault("_kept_casts", {})
    out = []
    for i, t in enumerate(blobs):
        if t is None or t.dtype != torch.float32 or dtype == torch.float32 or t.is_inference():
            out.append(t)
            continue
        entry = cache.get(i)
        if (entry is None or entry[0] is not t or entry[1] != t._version or entry[2].dtype != dtype
                or entry[2].device != t.device):
            # a normal tensor even when made under inference_mode: a later training pass saves it for backward
            with torch.inference_mode(False), torch.no_grad():
                if entry is not None and entry[0] is t and entry[2].dtype == dtype and entry[2].device == t.device:
                    entry[2].copy_(t)  # the updated blob cast into the same copy: no new allocation
                    kept = entry[2]
                else:
                    kept = t.detach().to(dtype)
            entry = cache[i] = (t, t._version, kept)
        kept = entry[2]
        if torch.is_grad_enabled() and t.requires_grad:
            out.append(_KeptCast.apply(t, kept))
        else:
            out.append(kept)
    return out


class Layer(torch.nn.Module):
    """Base class: one Caffe layer.

    Subclasses set ``caffe_type``, ``param_fields`` (which ``*_param`` messages
    of the LayerParameter they read, each mapped to the set of its fields they
    implement), ``n_bottoms`` / ``n_tops`` ((min, max) counts), and implement
    ``setup(bottom_shapes) -> top_shapes`` and ``forward(bottoms) -> tops``.
    """

    caffe_type = None
    param_fields = {}
    n_bottoms = (1, 1)
    n_tops = (1, 1)
    is_loss = False          # default loss_weight 1 on top 0 (Caffe's LossLayer)
    has_data_source = False  # Data / Input / DummyData produce blobs without bottoms

    def __init__(self, lp, ctx, bottom_shapes):
        super().__init__()
        self.lp = lp
        self.name = lp.name
        self.ctx = ctx
        self.bottom_names = list(lp.bottom)
        self.top_names = list(lp.top)
        self._blob_names = []
        self._blob_learnable = []
        self._check_fields()
        self._check_counts()
        self.bottom_shapes = [tuple(s) for s in bottom_shapes]
        self.top_shapes = [tuple(int(d) for d in s) for s in self.setup(self.bottom_shapes)]

    # ------------------------------------------------------------------ helpers
    def where(self):
        """'layer "name" (Type)' for messages."""
        return f'layer "{self.name}" ({self.caffe_type})'

    def error(self, message):
        """An InputError naming this layer."""
        return InputError(f"{self.where()}: {message}")

    def _check_fields(self):
        allowed = _COMMON_FIELDS | set(self.param_fields)
        for field, value in self.lp.ListFields():
            if field.name not in allowed:
                raise self.error(f"field '{field.name}' is not supported for this layer type")
            if field.name in self.param_fields:
                implemented = self.param_fields[field.name]
                for sub, _ in value.ListFields():
                    if sub.name not in implemented:
                        raise self.error(f"field '{field.name}.{sub.name}' is not supported")

    def _check_counts(self):
        for what, names, (lo, hi) in (("bottom", self.bottom_names, self.n_bottoms),
                                      ("top", self.top_names, self.n_tops)):
            n = len(names)
            if n < lo or (hi is not None and n > hi):
                want = f"{lo}" if lo == hi else (f"{lo} to {hi}" if hi is not None else f"at least {lo}")
                raise self.error(f"needs {want} {what} blob(s), got {n}")

    def canonical_axis(self, axis, ndim, what="axis"):
        """Caffe's CanonicalAxisIndex: negative axes count from the end."""
        if not -ndim <= axis < ndim:
            raise self.error(f"{what} {axis} is out of range for a blob with {ndim} axes")
        return axis + ndim if axis < 0 else axis

    def add_blob(self, tensor, learnable=True):
        """Register a parameter blob (Caffe order = call order); returns the tensor on the device."""
        idx = len(self._blob_names)
        name = f"blob{idx}"
        tensor = tensor.to(device=self.ctx.device, dtype=torch.float32)
        if learnable:
            self.register_parameter(name, torch.nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor)
        self._blob_names.append(name)
        self._blob_learnable.append(learnable)
        return getattr(self, name)

    def filled_blob(self, shape, filler, index, learnable=True):
        """Add a blob of ``shape`` filled by ``filler`` (a FillerParameter)."""
        t = fill(shape, filler, self.ctx.filler_generator, where=f"{self.where()} blob {index}")
        return self.add_blob(t, learnable)

    @property
    def blobs(self):
        """Parameter blobs in Caffe's order (tensors in Caffe's shapes)."""
        return [getattr(self, n) for n in self._blob_names]

    def set_blob(self, index, tensor):
        """Replace blob ``index`` by ``tensor`` itself (used for weight sharing)."""
        name = self._blob_names[index]
        if self._blob_learnable[index]:
            if not isinstance(tensor, torch.nn.Parameter):
                raise TypeError("a learnable blob must be shared as a torch.nn.Parameter")
            self.register_parameter(name, tensor)
        else:
            self.register_buffer(name, tensor)

    def blob_is_parameter(self, index):
        return self._blob_learnable[index]

    def spatial_window(self):
        """How a unit of top 0 sees bottom 0, for receptive fields: ``(kernel, stride, pad)`` along H.

        ``None`` means a unit sees its whole input (an inner product).  The default: a top of
        bottom 0's spatial size is element-wise, ``(1, 1, 0)``; a top without spatial axes sees
        everything.  Convolution and pooling override it with their windows.
        """
        if not self.bottom_shapes or not self.top_shapes:
            return None
        bottom, top = self.bottom_shapes[0], self.top_shapes[0]
        if len(bottom) == 4 and len(top) == 4 and tuple(top[2:]) == tuple(bottom[2:]):
            return (1, 1, 0)
        return None

    # ------------------------------------------------------------------ interface
    def setup(self, bottom_shapes):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, bottoms):  # pragma: no cover - abstract
        raise NotImplementedError

