"""One way to run a trained deploy net on cell crops: preprocessing, net, device, precision, batches.

Every step that turns crops into probabilities or features goes through :class:`Predictor`: the
predictions and features step (:mod:`deepyeast.analysis.predict`), a model bundle's predictor
(:meth:`deepyeast.model.bundle.Bundle.predictor`, so classify_screen), and the bioimage.io export
(which traces :meth:`Predictor.module`).  What a net needs besides its weights travels in a
:class:`NetFiles`; how to run it in an :class:`InferenceSettings`.

Preprocessing is Caffe's ``DataTransformer`` with ``mean_file`` and ``scale``::

    blob = (crop - mean) * input_scale      # float32; crop uint8 (or float) C x H x W

A net trained here has ``input_scale`` 1; the authors' Keras model, converted, 1/127.5 with a
constant mean of 127.5 (their ``x / 127.5 - 1``).
"""

import dataclasses
import math
import os

import numpy as np

from deepyeast.constants import INFERENCE_PRECISIONS
from deepyeast.utils.io import InputError

__all__ = ["InferenceSettings", "NetFiles", "Predictor", "device_of_gpu", "padded_batch", "PAD_STEPS"]


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """How to run a net on crops.

    device : str     torch device ("cpu", "cuda", "cuda:1"; :func:`device_of_gpu` maps ``--gpu ID``)
    precision : str  one of :data:`deepyeast.constants.INFERENCE_PRECISIONS` ("fp32" Caffe's
                     arithmetic; "bf16" convolutions, faster, a few calls near a tie change)
    batch : int      crops per forward pass
    fold : bool      BatchNorm/Scale folded into the layer before them (equal within float32
                     rounding; :func:`deepyeast.engine.fold.deploy_net`)
    """

    device: str = "cpu"
    precision: str = "fp32"
    batch: int = 100
    fold: bool = True

    def __post_init__(self):
        if self.precision not in INFERENCE_PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, (int, np.integer)) or self.batch < 1:
            raise InputError(f"batch must be an integer >= 1, got {self.batch!r}")

    def as_dict(self):
        """The settings for a summary (JSON-able)."""
        return dataclasses.asdict(self)


def device_of_gpu(gpu, flag="--gpu"):
    """The torch device of a ``--gpu ID`` option: "cpu" for None, else ``cuda:ID`` when that CUDA device
    exists here; InputError (one line naming the flag) when CUDA is missing or has fewer devices."""
    if gpu is None:
        return "cpu"
    import torch

    index = int(gpu)
    if not torch.cuda.is_available():
        raise InputError(f"{flag} {index}: CUDA is not available here (torch {torch.__version__}, "
                         f"{'built without CUDA' if torch.version.cuda is None else 'no CUDA device found'}); "
                         f"leave out {flag} to run on the CPU")
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise InputError(f"{flag} {index}: no such CUDA device (this machine has {count}: 0..{count - 1})")
    return f"cuda:{index}"


@dataclasses.dataclass(frozen=True)
class NetFiles:
    """A deploy net with what its input needs: the files and the preprocessing.

    deploy : str          deploy prototxt (an ``Input`` blob, e.g. "data")
    weights : str         ``.caffemodel``
    mean : ndarray|None   float32 C x H x W subtracted from every crop (None: nothing subtracted)
    input_scale : float   multiplies ``crop - mean``
    source : str          what messages name (a bundle folder; default the deploy file)
    """

    deploy: str
    weights: str
    mean: object = None
    input_scale: float = 1.0
    source: str = ""

    def __post_init__(self):
        scale = self.input_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise InputError(f"{self.where}: input scale must be a positive number, got {scale!r}")

    @property
    def where(self):
        return self.source or os.fspath(self.deploy)

    def preprocess(self, crops, input_shape):
        """float32 ``(crops - mean) * input_scale`` of uint8 (or float) N x C x H x W ``crops`` (numpy; the
        arithmetic :class:`Predictor` runs in torch, for checks against other engines)."""
        x = np.asarray(_check_crops(np.asarray(crops), input_shape, self.where), np.float32)
        if self.mean is not None:
            x = x - np.asarray(self.mean, np.float32)
        return x * np.float32(self.input_scale)


def _check_crops(crops, input_shape, source):
    """``crops`` as an ndarray-like N x C x H x W of the net's input shape, uint8 or float."""
    shape = tuple(getattr(crops, "shape", ()))
    if len(shape) != 4 or shape[1:] != tuple(input_shape):
        raise InputError(f"crops have shape {shape}; the model {source} takes N x "
                         f"{' x '.join(str(d) for d in input_shape)} (N x C x H x W)")
    dtype = np.dtype(getattr(crops, "dtype", np.float32))
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise InputError(f"crops are {dtype}; the model {source} takes uint8 crops (0-255), "
                         "scale 16-bit images to 8 bits first")
    return crops


def _crop_module(net, mean, input_scale, input_blob, keep):
    """torch Module: float32 crops N x C x H x W (on the net's device) -> blobs, preprocessing inside.

    ``forward(x)`` gives ``keep[0]`` as N x K (what a TorchScript trace records); ``blobs(x)`` the
    blobs named in ``keep`` (dict name -> tensor), the others let go as soon as no later layer
    reads them (:meth:`deepyeast.engine.net.Net.forward`).  The Input layer is fed
    directly: ``Net.forward(data=...)`` would move the value to the net's device, which a
    trace records as a constant device that a GPU consumer then trips on.
    """
    import torch

    class CropNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.from_numpy(np.ascontiguousarray(mean, np.float32)).to(net.device))
            self.register_buffer("scale", torch.tensor(float(input_scale), dtype=torch.float32, device=net.device))
            layer = next(lp for lp in net.net_param.layer if lp.type == "Input" and input_blob in lp.top)
            self.input_layer = net.layer(layer.name)
            self.input_index = list(layer.top).index(input_blob)
            self.keep = tuple(keep)

        def blobs(self, x):
            self.input_layer.values[self.input_index] = (x - self.mean) * self.scale
            return self.net.forward(keep=self.keep)

        def forward(self, x):
            return self.blobs(x)[self.keep[0]].reshape(x.shape[0], -1)

    return CropNet()


class Predictor:
    """A deploy net loaded once with its preprocessing, run on many batches of crops.

    ``model`` a :class:`NetFiles`; ``settings`` an :class:`InferenceSettings`; ``keep`` the
    blobs whose values are wanted (the first is what calling the predictor returns, the class
    probabilities "prob" of DeepYeast).  Calling it on uint8 (or float) N x C x H x W crops --
    an ndarray or anything sliceable with ``shape`` and ``dtype`` (:class:`deepyeast.analysis.
    predict.CropFile`) -- returns float32 N x K; :meth:`batches` yields every kept blob.
    """

    def __init__(self, model, settings=InferenceSettings(), keep=("prob",)):
        from deepyeast.caffe import caffe_pb2
        from deepyeast.caffe.prototxt import read_prototxt
        from deepyeast.engine.fold import deploy_net

        if not isinstance(settings, InferenceSettings):
            raise TypeError(f"settings must be an InferenceSettings, not {type(settings).__name__}")
        self.model = model
        self.settings = settings
        self.keep = list(dict.fromkeys(keep))
        if not self.keep:
            raise InputError(f"{model.where}: no blob to keep")
        param = read_prototxt(model.deploy, caffe_pb2.NetParameter)
        self.input_blob, self.input_shape = input_of(param, model.deploy)
        mean = np.zeros(self.input_shape, np.float32) if model.mean is None else np.asarray(model.mean, np.float32)
        if mean.shape != tuple(self.input_shape):
            raise InputError(f"{model.where}: the mean image is {' x '.join(map(str, mean.shape))}, the net takes "
                             f"{' x '.join(map(str, self.input_shape))} (C x H x W)")
        self.net = deploy_net(param, model.weights, precision=settings.precision, fold=settings.fold,
                              keep=self.keep, device=settings.device)
        missing = [b for b in self.keep if b not in self.net.blob_shapes]
        if missing:
            raise InputError(f"{model.deploy}: no blob named {', '.join(missing)} "
                             f"(blobs: {', '.join(self.net.blob_shapes)})")
        self.module = _crop_module(self.net, mean, model.input_scale, self.input_blob, self.keep).eval()

    @property
    def device(self):
        return self.net.device

    def batches(self, crops):
        """Yield ``(start, {blob: float32 torch tensor B x ...})`` per batch of ``crops`` (on the device).

        A batch of fewer than ``settings.batch`` crops (the last one) runs padded to
        :func:`padded_batch` rows; the padding rows are dropped.  So the net sees at most
        :data:`PAD_STEPS` batch sizes however many crops come, and the process's memory stays
        flat over many calls with different numbers of crops (why: :data:`PAD_STEPS`).  In a
        deploy net every row is computed on its own (BatchNorm uses stored statistics), so the
        kept rows are the same function of their crops; their float32 rounding may differ, as it
        does between any two batch sizes (oneDNN blocks the work by batch size: up to 6e-6
        relative seen, tests/test_inference.py).
        """
        import torch

        crops = _check_crops(crops, self.input_shape, self.model.where)
        n, step = crops.shape[0], self.settings.batch
        for start in range(0, n, step):
            # inference mode per batch, not across the yield: a caller that stops early leaves none behind
            with torch.inference_mode():
                x = np.asarray(crops[start:start + step], np.float32)
                m = x.shape[0]
                size = padded_batch(m, step)
                if size > m:  # zero crops as padding (any finite values do)
                    x = np.concatenate([x, np.zeros((size - m,) + x.shape[1:], np.float32)])
                out = self.module.blobs(torch.from_numpy(x).to(self.device))
                values = {b: out[b][:m].float() for b in self.keep}
            yield start, values

    def outputs(self, crops):
        """``{blob: float32 N x D}`` for every kept blob, each flattened per crop (in ``keep`` order)."""
        n = crops.shape[0]
        out = {}
        for start, blobs in self.batches(crops):
            for name, value in blobs.items():
                value = value.reshape(value.shape[0], -1).cpu().numpy()
                if name not in out:
                    out[name] = np.empty((n, value.shape[1]), np.float32)
                out[name][start:start + value.shape[0]] = value
        for name in self.keep:
            if name not in out:  # no crops: the width from the net's shapes
                shape = self.net.blob_shapes[name]
                out[name] = np.zeros((0, int(np.prod(shape[1:]))), np.float32)
        return out

    def __call__(self, crops):
        """float32 N x K: the first kept blob (the class probabilities), flattened per crop."""
        return self.outputs(crops)[self.keep[0]]


PAD_STEPS = 8
"""At most this many batch sizes reach the net (:func:`padded_batch`).

Why: torch and oneDNN allocate every activation of a forward pass afresh; with a batch size
not seen before, the freed blocks of earlier passes do not fit and glibc's heap grows around
the small blocks that stay alive between them.  Measured on the DeepYeast deploy net (fp32,
batch 100, 2-core AMD EPYC, 2026-12-06): calls with 1..40 crops took the resident memory
from 590 to 1,716 MiB; ``malloc_trim`` after every call kept it at ~510 MiB (the memory was
free, not live), so did running every call at one size (782 MiB at 40).  classify_screen's
chunks each end in a partial batch of a new size, so its memory grew with the number of
micrographs.  Padding alone did not make it flat; the rest of the fix: the net runs with
``keep`` (:meth:`deepyeast.engine.net.Net.forward`), so a pass holds about two layers'
activations instead of all of them and none between passes, and a screen's chunk task gives
the heap's free pages back when its process has grown (:class:`deepyeast.engine.net.HeapRelease`;
the heap is otherwise kept, :func:`deepyeast.engine.net._retain_freed_memory`).  Peak memory at
500 and 5,000 micrographs: bench/RESULTS.md, "A whole screen".
"""


def padded_batch(m, batch):
    """The rows a forward pass of ``m`` crops (1 <= m <= ``batch``) runs with: ``m`` rounded up to a
    multiple of ``ceil(batch / PAD_STEPS)``, at most ``batch`` (batch 100: 13, 26, ..., 91, 100)."""
    quantum = -(-batch // PAD_STEPS)
    return min(batch, -(-m // quantum) * quantum)


def input_of(net, source):
    """(blob name, C x H x W) of a deploy net's ``Input`` blob (a NetParameter); InputError naming ``source``."""
    for layer in net.layer:
        if layer.type == "Input" and layer.input_param.shape:
            dims = tuple(int(d) for d in layer.input_param.shape[0].dim)
            if len(dims) != 4:
                raise InputError(f"{source}: Input layer \"{layer.name}\" has shape {dims}; a crop net needs "
                                 "N x C x H x W")
            return layer.top[0], dims[1:]
    if net.input and net.input_shape:
        return net.input[0], tuple(int(d) for d in net.input_shape[0].dim[1:])
    raise InputError(f"{source}: a deploy net needs an Input layer (the data blob); "
                     "train_val.prototxt reads LMDBs itself, use deploy.prototxt")
