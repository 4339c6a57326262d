"""A Caffe net (``NetParameter``) executed by torch with Caffe's semantics.

Construction follows Caffe's ``Net::Init``: layers are filtered by the net
state (phase, level, stages; ``include``/``exclude`` rules), bottoms must name
blobs produced earlier, a top equal to its bottom is in place (the name then
holds the new value), every other top must be new.  Shapes are propagated
through all layers at construction, so a net whose shapes do not chain fails
before any data is read or trained, naming the layer and the shapes.

A blob feeding several layers needs no explicit Split: autograd adds the
gradients exactly as Caffe's implicit Split layers do.

Parameters (``learnable_params``) are listed in Caffe's order: every blob of
every layer in layer order, BatchNorm's three statistic blobs included (they
are buffers with lr_mult 0 and never get a gradient).  A parameter with
lr_mult 0 gets no gradient either, like Caffe's ``param_propagate_down``.
"""

import os
import random
import zlib
from collections import OrderedDict, namedtuple

import numpy as np
import torch

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import blob_to_array, read_caffemodel, write_caffemodel
from deepyeast.caffe.prototxt import read_prototxt
from deepyeast.utils.io import InputError
from deepyeast.utils.memory import status_mib
from deepyeast.engine.layers import LAYER_TYPES
from deepyeast.engine.layers.common import InnerProductLayer
from deepyeast.engine.layers.data import InputLayer
from deepyeast.engine.layers.neuron import ReLULayer
from deepyeast.engine.layers.normalization import BatchNormLayer, ScaleLayer
from deepyeast.engine.layers.vision import ConvolutionLayer

__all__ = ["Net", "ParamInfo", "state_meets_rule", "filter_layers"]

ParamInfo = namedtuple("ParamInfo", ["layer_name", "index", "tensor", "lr_mult", "decay_mult"])
ParamInfo.__doc__ = """One parameter blob: layer name, blob index in the layer, the tensor
(a ``torch.nn.Parameter``, or a buffer for BatchNorm statistics), lr_mult and decay_mult."""

_PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}


def state_meets_rule(state, rule):
    """Caffe's NetStateRule test: does ``state`` (phase, level, stages) satisfy ``rule``?"""
    phase, level, stages = state
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_layers(net_param, phase, level=0, stages=()):
    """The LayerParameters of ``net_param`` active in (phase, level, stages), in order (Caffe's FilterNet)."""
    state = (_PHASES[phase], int(level), set(stages))
    out = []
    for lp in net_param.layer:
        if lp.include and lp.exclude:
            raise InputError(f'layer "{lp.name}": specify either include rules or exclude rules, not both')
        if lp.include:
            keep = any(state_meets_rule(state, r) for r in lp.include)
        else:
            keep = not any(state_meets_rule(state, r) for r in lp.exclude)
        if keep:
            out.append(lp)
    return out


def _legacy_inputs(net_param):
    """NetParameter.input/input_shape/input_dim as an Input LayerParameter (Caffe's upgrade), or None."""
    if not net_param.input:
        return None
    n = len(net_param.input)
    lp = caffe_pb2.LayerParameter(name="input", type="Input")
    lp.top.extend(net_param.input)
    if net_param.input_shape:
        if len(net_param.input_shape) != n:
            raise InputError(f"net: {n} inputs but {len(net_param.input_shape)} input_shape entries")
        for s in net_param.input_shape:
            lp.input_param.shape.add().CopyFrom(s)
    elif net_param.input_dim:
        if len(net_param.input_dim) != 4 * n:
            raise InputError(f"net: input_dim needs 4 values per input ({n} inputs), got {len(net_param.input_dim)}")
        for i in range(n):
            lp.input_param.shape.add().dim.extend(net_param.input_dim[4 * i:4 * i + 4])
    else:
        raise InputError("net: input given without input_shape or input_dim")
    return lp


_HEAP_KEPT = False


def _retain_freed_memory():
    """Keep freed memory in the heap for reuse instead of giving it back to the OS (glibc only).

    This net's activations are tens to hundreds of MB.  glibc serves blocks that large
    with mmap and unmaps them when freed, so every pass page-faults them in again:
    measured 0.1 s of kernel time per inference batch of 100 and ~0.5 s per fp32
    training iteration on 2 cores (12-20% of the time).  With mmap off for the heap
    (M_MMAP_MAX 0) and trimming only above 1 GiB, a freed activation is reused by the
    next pass.  Process-wide and done once; the process keeps its peak heap until it
    exits.  Does nothing where the C library has no mallopt.
    """
    global _HEAP_KEPT
    if _HEAP_KEPT:
        return
    _HEAP_KEPT = True
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 1 << 30)


def release_freed_memory():
    """Give the free pages of the heap back to the OS (glibc's ``malloc_trim(0)``); True when done.

    The other side of :func:`_retain_freed_memory` for a long-running process: the heap it keeps
    fragments when passes of different sizes alternate with other work (a screen's segmentation
    between network batches), and its free part then grows with the work done.  Released now and
    then (when a screen's chunk tasks have grown the process: :class:`HeapRelease`), the process's
    memory stays flat; the next pass faults its activations in once.  False where the C library has no
    ``malloc_trim``.
    """
    try:
        import ctypes
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


RELEASE_MARGIN_MIB = 256
"""How far (MiB) a process's resident anonymous memory may grow above its level after a unit of work before
:class:`HeapRelease` gives the heap's free pages back."""


class HeapRelease:
    """Give the heap's free pages back when the process has grown, not after every unit of work (a screen's chunk).

    :func:`release_freed_memory` after every chunk keeps a long run's memory flat, but then the next network
    pass faults all its activations in again: measured on the DeepYeast deploy net, bf16, one thread, chunks
    of 97-131 crops with 16 micrographs segmented between passes (2-core AMD EPYC, 2026-12-06, two runs of 60
    chunks): 9.84 and 9.73 ms per cell released every time, 8.79 and 8.66 when not; fp32 17.9 either way.
    Instead :meth:`after_work` reads the process's resident anonymous memory after each unit: the first
    reading is the reference; a reading more than ``margin_mib`` above it releases the heap, and the reading
    after that (the next unit's working set faulted in again) is the new reference.  A unit's end level thus
    stays within ``margin_mib`` of a level reached right after a release, however many units run: memory is
    flat in the number of units, and a run whose heap does not creep releases nothing.  Where the memory
    cannot be read it releases every time.
    """

    def __init__(self, margin_mib=RELEASE_MARGIN_MIB):
        self.margin_mib = float(margin_mib)
        self.reference = None
        self.releases = 0

    def after_work(self):
        """Call when a unit of work has ended; True when the heap was released now."""
        now = status_mib("RssAnon")
        if now is None:
            self.releases += 1
            return release_freed_memory()
        if self.reference is None:
            self.reference = now
            return False
        if now <= self.reference + self.margin_mib:
            return False
        self.reference = None
        self.releases += 1
        return release_freed_memory()


class _Context:
    """What layers need from their net: phase, device, root folder and random streams."""

    def __init__(self, phase, device, root_dir, seed, data_shape=None):
        self.phase = phase
        self.device = device
        self.root_dir = root_dir
        self.seed = seed
        self.data_shape = data_shape  # C x H x W for Data layers when only shapes are asked for
        self.keep_casts = True  # layers.base.compute_blobs: weights kept in the autocast dtype between passes
        self.filler_generator = torch.Generator().manual_seed(seed)
        self._generators = {}

    def layer_seed(self, name):
        """A seed for a layer's own random stream, derived from the net seed and the layer name."""
        return (self.seed * 1000003 + zlib.crc32(name.encode("utf-8"))) % (2 ** 63)

    def generator(self, device):
        """The net's random stream for run-time draws (dropout) on ``device``."""
        key = str(device)
        if key not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(self.layer_seed("\0dropout"))
            self._generators[key] = g
        return self._generators[key]


class _Step:
    """One executed step: a layer, or a fused BatchNorm (+Scale) (+ReLU) chain on one blob."""

    __slots__ = ("layers", "bottoms", "tops", "run", "propagate", "fused", "losses")

    def __init__(self, layer, propagate, losses):
        self.layers = [layer]
        self.bottoms = layer.bottom_names
        self.tops = layer.top_names
        self.propagate = propagate
        self.fused = False
        self.run = layer.forward
        self.losses = losses  # [(top index, loss weight)] taken right after this step, as in Caffe


def _fused_bn_runner(bn, scale, relu):
    def run(bottoms):
        if scale is not None:
            weight, bias = scale.scale_bias(bottoms)
        else:
            weight = bias = None
        y = bn.normalize(bottoms[0], weight, bias)
        if relu is not None:
            y = torch.relu_(y)
        return [y]
    return run


def _fused_relu_runner(layer):
    if isinstance(layer, ConvolutionLayer):
        return layer.forward_relu  # ReLU as oneDNN's post-op where nothing needs a gradient

    def run(bottoms):
        # in place is safe: Convolution / InnerProduct outputs are new tensors, and their
        # backward needs their inputs and weights, not their outputs
        return [torch.relu_(layer.forward(bottoms)[0])]
    return run


class Net(torch.nn.Module):
    """A Caffe net built from a prototxt / NetParameter, run with torch.

    Parameters
    ----------
    net : caffe_pb2.NetParameter or str or os.PathLike
        The net definition, or the path of a prototxt.
    phase : {"TRAIN", "TEST"}
        Fixed at construction, as in Caffe (decides layer filtering, dropout,
        BatchNorm's default use_global_stats, Data crops).
    device : str or torch.device
        "cpu", "cuda", "cuda:0", ...
    level, stages : int, iterable of str
        The rest of Caffe's NetState for include/exclude rules.
    seed : int or None
        Seeds the fillers and the run-time random streams (dropout, data
        crops/mirrors); None draws one.
    root_dir : str or None
        Base folder for relative paths in the net (LMDB sources, mean files);
        default the current directory.
    channels_last : bool or None
        Run 4-D activations in channels-last memory order (faster convolutions
        on CPU and GPU); values are unchanged.  None = on.
    autocast : None, str or torch.dtype
        None (default): plain float32, for Caffe parity.  ``torch.bfloat16`` /
        "bf16" or ``torch.float16`` / "fp16": run forward under
        ``torch.autocast`` with that dtype (parameters, BatchNorm statistics
        and the loss stay float32; about 3x faster on a CPU with AVX512-BF16).
        "tf32": float32 tensors with TF32 matmuls/convolutions on CUDA.
    fuse : bool
        Fuse in-place BatchNorm -> Scale -> ReLU chains into one batch_norm call
        (same results up to float rounding).
    data_shape : tuple or None
        C x H x W of the records Data layers would read: with it, Data layers read no LMDB
        (for shape questions, see :meth:`for_shapes`).

    Shape questions (no data, no values needed): :meth:`for_shapes` builds the net on torch's
    ``meta`` device; ``blob_shapes``, :meth:`param_shapes`, :meth:`count_learnable`,
    :meth:`geometry` (receptive fields) and :attr:`learned_blobs` answer from the layers' own
    ``setup``, so every layer type the engine runs is also understood here.
    """

    def __init__(self, net, phase="TRAIN", device="cpu", level=0, stages=(), seed=None, root_dir=None,
                 channels_last=None, autocast=None, fuse=True, data_shape=None):
        super().__init__()
        if isinstance(phase, int) and not isinstance(phase, bool):
            phase = {caffe_pb2.TRAIN: "TRAIN", caffe_pb2.TEST: "TEST"}.get(phase, phase)
        phase = phase.upper() if isinstance(phase, str) else phase
        if phase not in _PHASES:
            raise InputError(f"phase must be TRAIN or TEST, got {phase!r}")
        if isinstance(net, (str, os.PathLike)):
            self.source = os.fspath(net)
            net = read_prototxt(net, caffe_pb2.NetParameter)
        elif isinstance(net, caffe_pb2.NetParameter):
            self.source = "<NetParameter>"
        else:
            raise TypeError(f"net must be a NetParameter or a prototxt path, got {type(net).__name__}")
        self.net_param = net
        self.name = net.name
        self.phase = phase
        self.device = torch.device(device)
        self.seed = int(seed) if seed is not None else random.SystemRandom().randrange(2 ** 31)
        self.root_dir = os.path.abspath(root_dir) if root_dir is not None else os.getcwd()
        self.channels_last = True if channels_last is None else bool(channels_last)
        if self.device.type == "cpu":
            _retain_freed_memory()
        self.autocast, self.tf32 = _autocast_mode(autocast)
        self._ctx = _Context(phase, self.device, self.root_dir, self.seed, data_shape)

        layer_params = filter_layers(net, phase, level, stages)
        legacy = _legacy_inputs(net)
        if legacy is not None:
            layer_params = [legacy] + layer_params

        self.layers = torch.nn.ModuleList()
        self.layer_names = []
        self._by_name = {}
        self._prototxt_weights = set()  # layers whose weights the prototxt itself holds (layer.blobs)
        self._param_specs = {}
        self.blob_shapes = OrderedDict()
        produced = {}          # blob name -> producing layer name (latest)
        param_names = {}
        steps = []
        self._loss_terms = []  # (blob name, weight)
        for lp in layer_params:
            if not lp.name:
                raise InputError(f"{self.source}: a layer of type {lp.type!r} has no name")
            if lp.name in self._by_name:
                raise InputError(f'{self.source}: two layers are named "{lp.name}"; layer names must be unique')
            cls = LAYER_TYPES.get(lp.type)
            if cls is None:
                raise InputError(f'layer "{lp.name}": unsupported layer type "{lp.type}" '
                                 f"(supported: {', '.join(sorted(LAYER_TYPES))})")
            bottom_shapes = []
            for i, b in enumerate(lp.bottom):
                if b not in self.blob_shapes:
                    raise InputError(f'layer "{lp.name}" ({lp.type}): unknown bottom blob "{b}" (bottom {i}); '
                                     "it must be the top of an earlier layer")
                bottom_shapes.append(self.blob_shapes[b])
            for i, t in enumerate(lp.top):
                in_place = i < len(lp.bottom) and lp.bottom[i] == t
                if not in_place and t in self.blob_shapes:
                    raise InputError(f'layer "{lp.name}" ({lp.type}): top blob "{t}" is already produced by '
                                     f'layer "{produced[t]}" (only in-place reuse, top i = bottom i, is allowed)')
                if list(lp.top).count(t) > 1:
                    raise InputError(f'layer "{lp.name}" ({lp.type}): top blob "{t}" is listed twice')
            layer = cls(lp, self._ctx, bottom_shapes)
            for i, (t, s) in enumerate(zip(lp.top, layer.top_shapes)):
                in_place = i < len(lp.bottom) and lp.bottom[i] == t
                if in_place and tuple(s) != tuple(self.blob_shapes[t]):
                    raise layer.error(f'in-place top "{t}" would change shape {self.blob_shapes[t]} -> {s}')
            self._setup_params(layer, lp, param_names)
            if lp.blobs:
                self._load_layer_blobs(layer, [blob_to_array(b, source=f'layer "{lp.name}" blob {j}')
                                               for j, b in enumerate(lp.blobs)], where="prototxt blobs")
                self._prototxt_weights.add(lp.name)
            for t, s in zip(lp.top, layer.top_shapes):
                self.blob_shapes[t] = tuple(s)
                produced[t] = lp.name
            losses = self._loss_weights(layer, lp)
            self._loss_terms.extend((lp.top[i], w) for i, w in losses)
            propagate = None
            if lp.propagate_down:
                if len(lp.propagate_down) != len(lp.bottom):
                    raise layer.error(f"propagate_down has {len(lp.propagate_down)} values for "
                                      f"{len(lp.bottom)} bottoms")
                propagate = [bool(p) for p in lp.propagate_down]
            self.layers.append(layer)
            self.layer_names.append(lp.name)
            self._by_name[lp.name] = layer
            steps.append(_Step(layer, propagate, losses))
        self._steps = self._fuse(steps) if fuse else steps
        self._drop_plans = {}
        self._input_layers = {}
        for layer in self.layers:
            if isinstance(layer, InputLayer):
                for i, t in enumerate(layer.top_names):
                    self._input_layers[t] = (layer, i)
        # Caffe's net outputs: blobs not consumed by a later layer, in sorted order (a std::set)
        available = set()
        for layer in self.layers:
            for b in layer.bottom_names:
                available.discard(b)
            available.update(layer.top_names)
        self.output_names = sorted(available)
        self.blobs = OrderedDict()
        self.loss = None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            # float32 parity needs true float32 math; TF32 only when asked for (global torch flags)
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32

    @classmethod
    def for_shapes(cls, net, phase="TEST", level=0, stages=(), data_shape=None):
        """The net on torch's ``meta`` device, for shape questions only (no values, no data read).

        ``data_shape``: C x H x W of the records of any ``Data`` layer (needed only when the net has one).
        """
        return cls(net, phase=phase, device="meta", level=level, stages=stages, seed=0, fuse=False,
                   data_shape=data_shape)

    # ------------------------------------------------------------------ construction helpers
    def _setup_params(self, layer, lp, param_names):
        n = len(layer.blobs)
        if len(lp.param) > n:
            raise layer.error(f"{len(lp.param)} param specs given but the layer has {n} parameter blobs")
        specs = []
        for i in range(n):
            lr, decay = 1.0, 1.0
            if i < len(lp.param):
                spec = lp.param[i]
                if spec.name:
                    if spec.name in param_names:
                        raise layer.error(f'param {i} name "{spec.name}" is also used by layer '
                                          f'"{param_names[spec.name]}": sharing parameters by name is not '
                                          "supported by this engine")
                    param_names[spec.name] = lp.name
                if spec.HasField("share_mode"):
                    raise layer.error(f"param {i}: share_mode is not supported (no parameter sharing)")
                lr, decay = float(spec.lr_mult), float(spec.decay_mult)
            if isinstance(layer, BatchNormLayer):
                lr = 0.0  # Caffe masks the statistics from optimization
            specs.append((lr, decay))
            t = layer.blobs[i]
            if layer.blob_is_parameter(i):
                t.requires_grad_(lr != 0.0)
        self._param_specs[lp.name] = specs

    @staticmethod
    def _loss_weights(layer, lp):
        n = len(lp.top)
        if lp.loss_weight:
            if len(lp.loss_weight) != n:
                raise layer.error(f"loss_weight has {len(lp.loss_weight)} values for {n} tops; "
                                  "give none or one per top")
            weights = [float(w) for w in lp.loss_weight]
        elif layer.is_loss:
            weights = [1.0] + [0.0] * (n - 1)
        else:
            weights = [0.0] * n
        return [(i, w) for i, w in enumerate(weights) if w != 0.0]

    def _fuse(self, steps):
        """Merge in-place BatchNorm -> Scale (own blobs, channel axis) -> ReLU (slope 0) chains."""
        out = []
        i = 0
        while i < len(steps):
            s = steps[i]
            layer = s.layers[0]
            if (isinstance(layer, BatchNormLayer) and s.propagate is None and not s.losses
                    and layer.bottom_names == layer.top_names):
                blob = layer.top_names[0]
                chain = [layer]
                j = i + 1
                scale = relu = None
                if j < len(steps):
                    nxt = steps[j].layers[0]
                    if (isinstance(nxt, ScaleLayer) and steps[j].propagate is None and nxt.own_scale
                            and not (steps[j].losses and j + 1 < len(steps) and isinstance(steps[j + 1].layers[0],
                                                                                            ReLULayer))
                            and nxt.bottom_names == [blob] and nxt.top_names == [blob]
                            and nxt.axis == 1 and len(nxt.blob0.shape) == 1):
                        scale = nxt
                        chain.append(nxt)
                        j += 1
                if j < len(steps):
                    nxt = steps[j].layers[0]
                    if (isinstance(nxt, ReLULayer) and steps[j].propagate is None and nxt.slope == 0.0
                            and nxt.bottom_names == [blob] and nxt.top_names == [blob]):
                        relu = nxt
                        chain.append(nxt)
                        j += 1
                if len(chain) > 1:
                    s = _Step(layer, None, steps[j - 1].losses)
                    s.layers = chain
                    s.fused = True
                    s.run = _fused_bn_runner(layer, scale, relu)
                    out.append(s)
                    i = j
                    continue
            if (isinstance(layer, (ConvolutionLayer, InnerProductLayer)) and not s.losses
                    and i + 1 < len(steps)):
                nxt = steps[i + 1]
                relu = nxt.layers[0]
                if (isinstance(relu, ReLULayer) and relu.slope == 0.0 and nxt.propagate is None
                        and relu.bottom_names == layer.top_names and relu.top_names == layer.top_names):
                    # a product followed by an in-place ReLU (a folded net): rectify its fresh output in place
                    s = _Step(layer, s.propagate, nxt.losses)
                    s.layers = [layer, relu]
                    s.fused = True
                    s.run = _fused_relu_runner(layer)
                    out.append(s)
                    i += 2
                    continue
            out.append(s)
            i += 1
        return out

    def _load_layer_blobs(self, layer, arrays, where):
        blobs = layer.blobs
        if len(arrays) != len(blobs):
            raise layer.error(f"{where}: {len(arrays)} blobs given, the layer has {len(blobs)}")
        with torch.no_grad():
            for i, (t, a) in enumerate(zip(blobs, arrays)):
                a = np.asarray(a, dtype=np.float32)
                if tuple(a.shape) != tuple(t.shape):
                    # Caffe accepts legacy 4-D blobs (leading 1s) with the same values
                    squeezed = tuple(a.shape)
                    while len(squeezed) > len(t.shape) and squeezed[0] == 1:
                        squeezed = squeezed[1:]
                    if squeezed != tuple(t.shape):
                        raise layer.error(f"{where}: blob {i} has shape {tuple(a.shape)}, the net needs "
                                          f"{tuple(t.shape)}")
                    a = a.reshape(t.shape)
                t.copy_(torch.from_numpy(np.ascontiguousarray(a)))

    # ------------------------------------------------------------------ running
    def forward(self, keep=None, **inputs):
        """Run every layer once; returns all blobs by name (in-place names hold the final value).

        ``inputs`` feed Input-layer tops by name (array-like; axis 0 may differ
        from the prototxt's batch size); Data layers read their next batch.
        Sets ``self.blobs`` and ``self.loss`` (sum of loss_weight x top sums).

        ``keep``: None (every blob, as Caffe), or the blob names wanted: each other blob is
        let go right after the last layer that reads it, and only these are returned and kept
        in ``self.blobs``.  The values are the same; a forward pass then holds about two
        layers' activations at a time instead of all of them (batch 100 of DeepYeast in
        fp32: ~0.5 GB less at the peak), and nothing of it stays alive until the next pass.
        """
        for name, value in inputs.items():
            if name not in self._input_layers:
                raise InputError(f"forward: '{name}' is not an Input blob of this net "
                                 f"(inputs: {', '.join(self._input_layers) or 'none'})")
            layer, idx = self._input_layers[name]
            layer.set_input(idx, value)
        blobs = OrderedDict()
        loss = None
        cl = self.channels_last
        ctx = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
               else _null_context())
        drops = self._drop_plan(keep) if keep is not None else None
        with ctx:
            for k, step in enumerate(self._steps):
                bottoms = [blobs[b] for b in step.bottoms]
                if step.propagate is not None:
                    bottoms = [b if p else b.detach() for b, p in zip(bottoms, step.propagate)]
                tops = step.run(bottoms)
                for name, t in zip(step.tops, tops):
                    if cl and t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                        t = t.contiguous(memory_format=torch.channels_last)
                    blobs[name] = t
                for i, w in step.losses:
                    t = blobs[step.tops[i]].float()
                    term = (t.sum() if t.dim() else t) * w
                    loss = term if loss is None else loss + term
                if drops is not None:
                    bottoms = tops = t = None  # no reference left to a dropped blob
                    for name in drops[k]:
                        del blobs[name]
        if loss is None:
            loss = torch.zeros((), device=self.device)
        self.blobs = blobs
        self.loss = loss
        return blobs

    def _drop_plan(self, keep):
        """Per step, the blob names to let go after it when only ``keep`` is wanted (see :meth:`forward`)."""
        keep = tuple(keep)
        plan = self._drop_plans.get(keep)
        if plan is None:
            missing = [b for b in keep if b not in self.blob_shapes]
            if missing:
                raise InputError(f"forward: no blob named {', '.join(missing)} (blobs: {', '.join(self.blob_shapes)})")
            last = {}
            for k, step in enumerate(self._steps):
                for name in list(step.bottoms) + list(step.tops):
                    last[name] = k
            plan = [[] for _ in self._steps]
            for name, k in last.items():
                if name not in keep:
                    plan[k].append(name)
            self._drop_plans[keep] = plan
        return plan

    @property
    def keep_casts(self):
        """Under bf16/fp16 autocast, Convolution and InnerProduct weights are kept in that dtype between
        forward passes and cast again only after they changed (:func:`deepyeast.engine.layers.base.compute_blobs`;
        the same numbers as autocast's cast at every pass).  True by default; False casts at every
        pass (the engine before issue 24, for benchmarks)."""
        return self._ctx.keep_casts

    @keep_casts.setter
    def keep_casts(self, value):
        self._ctx.keep_casts = bool(value)
        for layer in self.layers:
            layer.__dict__.pop("_kept_casts", None)

    def train(self, mode=True):
        """No-op besides torch's flag: the phase is fixed at construction, as in Caffe."""
        return super().train(mode)

    # ------------------------------------------------------------------ parameters
    @property
    def loss_weights(self):
        """dict top blob name -> loss weight, for the tops that count in the loss (Caffe's rules)."""
        out = {}
        for name, w in self._loss_terms:
            out[name] = out.get(name, 0.0) + w
        return out

    def layer(self, name):
        """The layer module named ``name``."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f'no layer "{name}" in this net') from None

    @property
    def learnable_params(self):
        """ParamInfo for every parameter blob, in Caffe's order (layer order, blob order)."""
        out = []
        for layer in self.layers:
            specs = self._param_specs[layer.name]
            for i, t in enumerate(layer.blobs):
                lr, decay = specs[i]
                out.append(ParamInfo(layer.name, i, t, lr, decay))
        return out

    def layer_params(self):
        """OrderedDict layer name -> list of parameter tensors (Caffe's blob order and shapes)."""
        return OrderedDict((layer.name, list(layer.blobs)) for layer in self.layers if layer.blobs)

    def param_shapes(self):
        """OrderedDict layer name -> list of parameter-blob shapes (Caffe's order), layers with blobs only."""
        return OrderedDict((name, [tuple(t.shape) for t in blobs]) for name, blobs in self.layer_params().items())

    def count_learnable(self):
        """Number of learnable parameter values (blobs with a non-zero lr_mult; BatchNorm statistics are not)."""
        return sum(int(info.tensor.numel()) for info in self.learnable_params if info.lr_mult != 0)

    @property
    def learned_blobs(self):
        """Blobs produced (not in place) by layers with learnable parameters, input side first:
        for DeepYeast conv1 .. conv8, fc1, fc2, fc3 -- the features the analyses use."""
        from deepyeast.engine.shapes import learned_blobs

        return learned_blobs(self)

    def geometry(self):
        """OrderedDict blob name -> BlobGeometry (per-cell shape, receptive field); see
        :func:`deepyeast.engine.shapes.blob_geometry`."""
        from deepyeast.engine.shapes import blob_geometry

        return blob_geometry(self)

    def random_weights(self, seed=0, bn_factor=0.8, input_scale=1.0):
        """Random, well-scaled values for every parameter blob; see :func:`deepyeast.engine.shapes.random_weights`."""
        from deepyeast.engine.shapes import random_weights

        return random_weights(self, seed, bn_factor, input_scale)

    def load_caffemodel(self, path, allow_missing=False):
        """Copy weights from a ``.caffemodel`` by layer name (layers the net lacks are ignored, as in Caffe).

        Returns the names of the layers loaded.  A layer whose blob count or shapes differ raises
        InputError naming the layer and both shapes; so does a learned layer of the net the file has no
        weights for (it would run on its filler's random values), unless ``allow_missing`` (fine-tuning,
        where new layers start from their fillers).
        """
        params = read_caffemodel(path)
        where = os.fspath(path)
        loaded = self._load(params, where)
        if not loaded and any(layer.blobs for layer in self.layers):
            raise InputError(f"{where}: none of its layers ({', '.join(list(params)[:5])}"
                             f"{', ...' if len(params) > 5 else ''}) is a layer of this net with weights; "
                             "the net would run on its initial weights")
        if not allow_missing:
            self.check_loaded(loaded, where)
        return loaded

    def load_weights(self, params, where="weights", allow_missing=False):
        """Copy weights from a dict layer name -> list of arrays (as read_caffemodel returns); ``where``
        names their source in errors.  Every learned layer must get weights unless ``allow_missing``
        (see :meth:`load_caffemodel`).  Returns the names of the layers loaded."""
        loaded = self._load(params, where)
        if not allow_missing:
            self.check_loaded(loaded, where)
        return loaded

    def _load(self, params, where):
        loaded = []
        for name, arrays in params.items():
            layer = self._by_name.get(name)
            if layer is not None:
                self._load_layer_blobs(layer, arrays, where=where)
                loaded.append(name)
        return loaded

    def check_loaded(self, loaded, where):
        """InputError naming the learned layers of this net (layers with parameter blobs) not in ``loaded``
        and without weights in the prototxt itself."""
        have = set(loaded) | self._prototxt_weights
        missing = [name for name in self.layer_params() if name not in have]
        if missing:
            raise InputError(f"{where}: no weights for layer(s) {', '.join(missing)} of net {self.name or '(unnamed)'}: "
                             "they would run on their fillers' random values; give weights trained for this net "
                             "(fine-tuning that starts new layers afresh: deepyeast train -finetune)")

    def save_caffemodel(self, path):
        """Write all parameter blobs as a binary ``.caffemodel`` (atomically)."""
        params = OrderedDict()
        types = {}
        for name, blobs in self.layer_params().items():
            params[name] = [t.detach().float().cpu().numpy() for t in blobs]
            types[name] = self._by_name[name].caffe_type
        write_caffemodel(path, params, net_name=self.name, layer_types=types)

    def share_params_from(self, other):
        """Use ``other``'s parameter tensors for same-named layers (Caffe's ShareTrainedLayersWith)."""
        for layer in self.layers:
            src = other._by_name.get(layer.name)
            if src is None or not layer.blobs:
                continue
            if len(src.blobs) != len(layer.blobs):
                raise layer.error(f"cannot share weights with the other net's layer: {len(src.blobs)} blobs "
                                  f"there, {len(layer.blobs)} here")
            for i, (mine, theirs) in enumerate(zip(layer.blobs, src.blobs)):
                if tuple(mine.shape) != tuple(theirs.shape):
                    raise layer.error(f"cannot share blob {i}: shape {tuple(theirs.shape)} in the other net, "
                                      f"{tuple(mine.shape)} here")
                layer.set_blob(i, theirs)
        return self

    # ------------------------------------------------------------------ random / data state
    def data_state(self):
        """Data-layer cursors and the net's random-stream states (for exact resume)."""
        state = {"layers": {}, "generators": {}}
        for layer in self.layers:
            if hasattr(layer, "state") and callable(layer.state):
                state["layers"][layer.name] = layer.state()
        for key, g in self._ctx._generators.items():
            state["generators"][key] = g.get_state()
        return state

    def set_data_state(self, state):
        """Restore what :meth:`data_state` returned."""
        for name, s in state.get("layers", {}).items():
            layer = self._by_name.get(name)
            if layer is None or not hasattr(layer, "set_state"):
                raise InputError(f'data state names layer "{name}", which this net has no Data layer for')
            layer.set_state(s)
        for key, s in state.get("generators", {}).items():
            self._ctx.generator(torch.device(key)).set_state(s)

    # ------------------------------------------------------------------ cost
    def flop_counts(self):
        """OrderedDict layer name -> (forward, weight gradient, input gradient) FLOPs of every
        Convolution and InnerProduct; see :func:`deepyeast.engine.shapes.flop_counts`."""
        from deepyeast.engine.shapes import flop_counts

        return flop_counts(self)

    def extra_repr(self):
        return f"name={self.name!r}, phase={self.phase}, device={self.device}, layers={len(self.layers)}"


_AUTOCAST_NAMES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                   "float16": torch.float16, "half": torch.float16}


def _autocast_mode(autocast):
    """(autocast dtype or None, tf32 flag) from the ``autocast`` argument of Net."""
    if autocast is None or autocast is False or autocast in ("", "none", "fp32", "float32"):
        return None, False
    if autocast == "tf32":
        return None, True
    if isinstance(autocast, str):
        if autocast.lower() not in _AUTOCAST_NAMES:
            raise InputError(f"autocast must be one of none, fp32, tf32, {', '.join(_AUTOCAST_NAMES)}; "
                             f"got {autocast!r}")
        return _AUTOCAST_NAMES[autocast.lower()], False
    if autocast in (torch.bfloat16, torch.float16):
        return autocast, False
    raise InputError(f"autocast must be None, 'tf32', 'bf16', 'fp16' or a torch dtype, got {autocast!r}")


class _null_context:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
