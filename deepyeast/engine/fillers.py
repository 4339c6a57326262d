"""Caffe's weight fillers (``FillerParameter``), drawn with a torch generator.

The distributions and the fan definitions are Caffe's; the random streams are
torch's (Caffe's boost RNG is not reproduced), so equal seeds give equal
weights within this engine only.

Caffe's fans use the legacy 4-D view of a blob: ``num`` is the size of axis 0
and ``channels`` the size of axis 1 (1 when the blob has one axis), and

* ``fan_in  = count / num``       (e.g. in_channels * kh * kw for a convolution),
* ``fan_out = count / channels``  (e.g. out_channels * kh * kw).
"""

import math

import torch

from deepyeast.utils.io import InputError

__all__ = ["fill", "FILLER_TYPES", "caffe_fans"]

FILLER_TYPES = ("constant", "gaussian", "uniform", "xavier", "msra")

_VARIANCE_NORMS = {0: "FAN_IN", 1: "FAN_OUT", 2: "AVERAGE"}


def caffe_fans(shape):
    """(fan_in, fan_out) of a blob of ``shape`` by Caffe's legacy num/channels rule."""
    shape = tuple(int(s) for s in shape)
    count = 1
    for s in shape:
        count *= s
    num = shape[0] if len(shape) >= 1 else 1
    channels = shape[1] if len(shape) >= 2 else 1
    if num == 0 or channels == 0:
        raise InputError(f"cannot compute fans of an empty blob of shape {shape}")
    return count // num, count // channels


def _check_fields(filler, where, allowed):
    for field, _ in filler.ListFields():
        if field.name not in allowed:
            raise InputError(f"{where}: filler field '{field.name}' is not used by filler type "
                             f"'{filler.type}' (allowed: {', '.join(sorted(allowed))})")


def fill(shape, filler, generator, where="filler"):
    """A new float32 CPU tensor of ``shape`` filled as Caffe's ``filler`` says.

    Parameters
    ----------
    shape : tuple of int
        Blob shape in Caffe's layout.
    filler : caffe_pb2.FillerParameter
        Type and arguments; unset fields take Caffe's defaults (constant 0).
    generator : torch.Generator
        CPU generator the random draws come from.
    where : str
        Names the layer and blob in error messages.
    """
    shape = tuple(int(s) for s in shape)
    kind = filler.type
    out = torch.empty(shape, dtype=torch.float32)
    if kind == "constant":
        _check_fields(filler, where, {"type", "value"})
        out.fill_(filler.value)
    elif kind == "uniform":
        _check_fields(filler, where, {"type", "min", "max"})
        if filler.max < filler.min:
            raise InputError(f"{where}: uniform filler needs min <= max, got min {filler.min} max {filler.max}")
        out.uniform_(filler.min, filler.max, generator=generator)
    elif kind == "gaussian":
        _check_fields(filler, where, {"type", "mean", "std", "sparse"})
        out.normal_(filler.mean, filler.std, generator=generator)
        if filler.sparse >= 0:
            # Caffe keeps each weight with probability sparse / num_outputs (num_outputs = shape[0])
            if len(shape) < 1:
                raise InputError(f"{where}: a sparse gaussian filler needs a blob with at least one axis")
            p = float(filler.sparse) / float(shape[0])
            keep = torch.rand(shape, generator=generator) < p
            out.mul_(keep.to(out.dtype))
    elif kind in ("xavier", "msra"):
        _check_fields(filler, where, {"type", "variance_norm"})
        fan_in, fan_out = caffe_fans(shape)
        norm = filler.variance_norm
        if norm == 0:
            n = float(fan_in)
        elif norm == 1:
            n = float(fan_out)
        elif norm == 2:
            n = (fan_in + fan_out) / 2.0
        else:
            raise InputError(f"{where}: unknown variance_norm {norm}")
        if kind == "xavier":
            scale = math.sqrt(3.0 / n)
            out.uniform_(-scale, scale, generator=generator)
        else:
            out.normal_(0.0, math.sqrt(2.0 / n), generator=generator)
    else:
        raise InputError(f"{where}: unsupported filler type '{kind}' (supported: {', '.join(FILLER_TYPES)})")
    return out
