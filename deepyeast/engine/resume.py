"""What our engine keeps beside a snapshot to resume it exactly, in a format that cannot run code.

Beside ``{prefix}_iter_{N}.solverstate`` (Caffe's format: iteration, step, momentum history) the
solver writes ``{prefix}_iter_{N}.dystate.npz`` (:data:`STATE_SUFFIX`): a NumPy ``.npz`` archive
of plain numeric arrays, read with ``allow_pickle=False``, holding

* ``state.json`` (UTF-8 bytes): the format version, the iteration, the data layers' cursors, the
  numpy random state's scalars, and the **fingerprints** of what the snapshot was trained on
  (:func:`fingerprints`: the net, the solver's optimisation settings, every Data layer's
  records and mean, as sha256 digests);
* the random-number generator states (torch CPU and CUDA, numpy MT19937, each Data layer's and
  the net's dropout generator) as uint8 / uint32 arrays that ``state.json`` refers to by name.

Nothing in it is ever unpickled: an array of Python objects, or a file that is not such an
archive, is refused with :class:`InputError`.  Earlier versions wrote a pickled ``.dystate``;
such a file is never loaded (a crafted pickle runs code): resuming then continues from the
``.solverstate`` alone, with the data order restarting at the first record, as in Caffe.
"""

import hashlib
import io
import json
import os

import numpy as np
import torch

from deepyeast.caffe import caffe_pb2
from deepyeast.engine.snapshots import STATE_SUFFIX
from deepyeast.utils.io import InputError, atomic_path

__all__ = ["STATE_SUFFIX", "OLD_PICKLE_SUFFIX", "state_path", "old_pickle_path", "write_engine_state",
           "read_engine_state", "fingerprints", "fingerprint_changes"]

STATE_VERSION = 2
OLD_PICKLE_SUFFIX = ".dystate"

# solver fields that do not change the trajectory of the weights: a run may change them and resume
_SCHEDULE_ONLY = ("net", "net_param", "train_net", "test_net", "train_net_param", "test_net_param",
                  "train_state", "test_state", "max_iter", "display", "average_loss", "snapshot",
                  "snapshot_prefix", "snapshot_after_train", "snapshot_diff", "snapshot_format", "test_iter",
                  "test_interval", "test_initialization", "test_compute_loss", "solver_mode", "device_id",
                  "debug_info")


def state_path(solverstate):
    """``X_iter_N.solverstate`` -> ``X_iter_N.dystate.npz``."""
    return os.path.splitext(os.fspath(solverstate))[0] + STATE_SUFFIX


def old_pickle_path(solverstate):
    """``X_iter_N.solverstate`` -> ``X_iter_N.dystate`` (the old pickled format, never loaded)."""
    return os.path.splitext(os.fspath(solverstate))[0] + OLD_PICKLE_SUFFIX


# --------------------------------------------------------------------------- fingerprints

def _digest(message):
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


def net_fingerprint(net_param):
    """sha256 of a NetParameter without its data locations (``data_param.source``,
    ``transform_param.mean_file``): the data's content is fingerprinted separately, so moving the
    LMDBs does not count as a change, and changing their content does."""
    p = caffe_pb2.NetParameter()
    p.CopyFrom(net_param)
    for layer in p.layer:
        if layer.HasField("data_param"):
            layer.data_param.ClearField("source")
        if layer.HasField("transform_param"):
            layer.transform_param.ClearField("mean_file")
    return _digest(p)


def solver_fingerprint(solver_param):
    """sha256 of the solver's optimisation settings (lr policy, momentum, decay, seed, ...); the
    fields of a schedule's length, display, testing and snapshots (``_SCHEDULE_ONLY``) are left out,
    so a run may be extended (a larger ``max_iter``) and resumed."""
    p = caffe_pb2.SolverParameter()
    p.CopyFrom(solver_param)
    for name in _SCHEDULE_ONLY:
        p.ClearField(name)
    return _digest(p)


def fingerprints(solver):
    """What a :class:`~deepyeast.engine.solver.Solver` trains on: ``{"net", "solver", "data"}``
    (``data``: ``"TRAIN/<layer>"`` and ``"TEST#k/<layer>"`` -> each Data layer's digests)."""
    data = {}
    for tag, net in [("TRAIN", solver.net)] + [(f"TEST#{k}", n) for k, n in enumerate(solver.test_nets)]:
        for layer in net.layers:
            if getattr(layer, "caffe_type", "") == "Data":
                data[f"{tag}/{layer.name}"] = layer.fingerprint()
    return {"net": net_fingerprint(solver.net.net_param), "solver": solver_fingerprint(solver.param),
            "data": data}


def fingerprint_changes(recorded, current):
    """Human-readable list of what differs between two :func:`fingerprints` dicts ([] when none)."""
    changes = []
    if recorded.get("net") != current.get("net"):
        changes.append("the net prototxt (layers or their settings)")
    if recorded.get("solver") != current.get("solver"):
        changes.append("the solver's optimisation settings")
    old, new = recorded.get("data", {}), current.get("data", {})
    for key in sorted(set(old) | set(new)):
        if key not in old or key not in new:
            changes.append(f"the Data layers ({key} is {'new' if key not in old else 'gone'})")
        else:
            for part, what in (("records_sha256", "records"), ("mean_sha256", "mean image")):
                if old[key].get(part) != new[key].get(part):
                    changes.append(f"the {what} of Data layer {key}")
    return changes


# --------------------------------------------------------------------------- (de)serialisation

class _Arrays:
    """Collects arrays under generated names while a nested state is turned into JSON."""

    def __init__(self):
        self.arrays = {}

    def put(self, value):
        name = f"a{len(self.arrays)}"
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if value.dtype == object:
            raise TypeError("object arrays are not stored")
        self.arrays[name] = value
        return {"__array__": name}


def _encode(obj, arrays):
    if isinstance(obj, dict):
        return {str(k): _encode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return arrays.put(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in an engine state")


def _decode(obj, arrays, path):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            name = obj["__array__"]
            if name not in arrays:
                raise InputError(f"{path}: state.json refers to array {name!r}, which the file does not hold")
            return arrays[name]
        return {k: _decode(v, arrays, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays, path) for v in obj]
    return obj


def write_engine_state(path, solver, fingerprints_=None):
    """Write ``path`` (``.dystate.npz``): iteration, random states, data cursors, fingerprints."""
    np_state = np.random.get_state()
    state = {
        "format": "deepyeast.engine-state", "version": STATE_VERSION, "iter": int(solver.iter),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None,
        "numpy_rng": [np_state[0], np_state[1], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "train_data": solver.net.data_state(),
        "test_data": [n.data_state() for n in solver.test_nets],
        "fingerprints": fingerprints_,
    }
    arrays = _Arrays()
    doc = _encode(state, arrays)
    arrays.arrays["state.json"] = np.frombuffer(json.dumps(doc, sort_keys=True).encode("utf-8"), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays.arrays)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())


def read_engine_state(path):
    """Read a ``.dystate.npz`` without unpickling anything; InputError naming the file when it is not one.

    Returns the state dict: ``iter``, ``torch_rng`` (uint8 tensor), ``cuda_rng`` (list or None),
    ``numpy_rng`` (the tuple ``np.random.set_state`` takes), ``train_data``, ``test_data``
    (the nets' :meth:`~deepyeast.engine.Net.data_state`, generator states as uint8 tensors),
    ``fingerprints`` (dict or None).
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except OSError as err:
        raise InputError(f"{path}: cannot read the engine state: {err.strerror or err}") from None
    except (ValueError, EOFError) as err:  # a pickle, an object array, a damaged archive
        raise InputError(f"{path}: not an engine state (.npz of plain arrays): {err}") from None
    except Exception as err:  # zipfile.BadZipFile and the like
        raise InputError(f"{path}: not an engine state (.npz of plain arrays): {err}") from None
    if not isinstance(arrays, dict) or "state.json" not in arrays:
        raise InputError(f"{path}: not an engine state (no state.json inside)")
    try:
        doc = json.loads(arrays.pop("state.json").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: its state.json is not valid JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != "deepyeast.engine-state":
        raise InputError(f"{path}: not an engine state (format {doc.get('format') if isinstance(doc, dict) else doc!r})")
    if doc.get("version") != STATE_VERSION:
        raise InputError(f"{path}: engine state version {doc.get('version')}, this engine reads {STATE_VERSION}")
    state = _decode(doc, arrays, path)
    try:
        state["torch_rng"] = torch.from_numpy(np.ascontiguousarray(state["torch_rng"], np.uint8))
        if state.get("cuda_rng") is not None:
            state["cuda_rng"] = [torch.from_numpy(np.ascontiguousarray(a, np.uint8)) for a in state["cuda_rng"]]
        name, keys, pos, has_gauss, cached = state["numpy_rng"]
        state["numpy_rng"] = (str(name), np.asarray(keys, np.uint32), int(pos), int(has_gauss), float(cached))
        for net_state in [state["train_data"]] + list(state.get("test_data") or []):
            for layer in net_state.get("layers", {}).values():
                layer["rng"] = torch.from_numpy(np.ascontiguousarray(layer["rng"], np.uint8))
            net_state["generators"] = {k: torch.from_numpy(np.ascontiguousarray(v, np.uint8))
                                       for k, v in net_state.get("generators", {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(f"{path}: incomplete engine state ({type(err).__name__}: {err})") from None
    return state


def recorded_fingerprints(solverstate):
    """The fingerprints recorded beside ``solverstate`` (dict), or None when there are none (a
    snapshot written by real Caffe, or by an older version of this engine)."""
    path = state_path(solverstate)
    if not os.path.isfile(path):
        return None
    return read_engine_state(path).get("fingerprints")
