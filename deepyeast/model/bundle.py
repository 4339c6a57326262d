"""Model bundles: a trained DeepYeast as one folder that carries its own metadata.

A bundle is what ``analysis/make_bundle.py`` writes from a trained run (``RUN/model/``) and
what ``analysis/convert_keras_weights.py`` makes of the authors' Keras weights.  It
follows Caffe's model zoo (a folder with the net, the weights and a ``readme.md``
with YAML front matter) and, like timm or torchvision weights, it carries the
facts needed to use it (classes, channel order, crop size, normalisation) in a
machine-readable file beside them::

    MODEL/deploy.prototxt     the deploy net: Input blob -> ... -> softmax blob
    MODEL/weights.caffemodel  trained weights (binary NetParameter; real Caffe reads it)
    MODEL/mean.binaryproto    float32 1 x C x H x W image subtracted from every crop
    MODEL/classes.txt         the class table, ``label;label_idx`` lines like HOwt_doc.txt
    MODEL/readme.md           model-zoo readme: data, schedule, metrics, input, use
    MODEL/bundle.json         the same facts for programs, and the sha256 of every file
    MODEL/examples.npy        (optional) uint8 N x C x H x W example crops
    MODEL/ood.npz             (optional) class means and tied inverse covariance of fc1 features, and
                              the training crops' input statistics (out-of-distribution scores,
                              deepyeast/analysis/ood.py)

Input convention (the same as Caffe's ``DataTransformer``, i.e. what a ``Data``
layer with ``transform_param { mean_file: "mean.binaryproto" scale: S }`` does)::

    blob = (crop - mean) * input_scale      # float32, crop uint8 C x H x W

with channel 0 the red cytosolic marker and channel 1 the green GFP-tagged
protein (:data:`deepyeast.constants.CHANNELS`).  A bundle trained here has
``input_scale`` 1 and the training-set mean image; the authors' Keras model has
a constant mean of 127.5 and ``input_scale`` 1/127.5 (their ``x/127.5 - 1``).

This module holds the format and its checks; the readme is written by
:mod:`deepyeast.model.bundle_readme` and the net is run by :class:`deepyeast.engine.inference.Predictor`
(:meth:`Bundle.predictor`).

:func:`read_bundle` refuses, with one line naming the file and field, a bundle
whose files do not match their checksums, whose class table disagrees with the
net's output size, whose mean image does not have the input's shape, or whose
weights do not fit the deploy net.  :func:`write_bundle` runs the same checks on
the new folder before it appears, atomically, under its final name.
"""

import dataclasses
import datetime
import json
import math
import os
import shutil

import numpy as np

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import check_mean_shape, read_mean_binaryproto, write_mean_binaryproto
from deepyeast.caffe.prototxt import read_prototxt, write_prototxt
from deepyeast.constants import CHANNELS, MEAN_FILE
from deepyeast.data.lists import read_class_doc, write_class_doc
from deepyeast.engine.inference import InferenceSettings, NetFiles, Predictor, input_of
from deepyeast.utils.io import InputError, atomic_folder, file_digest

__all__ = ["Bundle", "BUNDLE_FORMAT", "BUNDLE_FILES", "read_bundle", "write_bundle",
           "predict_crops", "write_class_table", "read_class_table"]

BUNDLE_FORMAT = "deepyeast-model-bundle"
BUNDLE_FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
DEPLOY = "deploy.prototxt"
WEIGHTS = "weights.caffemodel"
MEAN = MEAN_FILE
CLASSES = "classes.txt"
README = "readme.md"
EXAMPLES = "examples.npy"
OOD = "ood.npz"  # deepyeast.analysis.ood.OOD_FILE (the model layer does not import analysis)
BUNDLE_FILES = (DEPLOY, WEIGHTS, MEAN, CLASSES, README)
"""Files every bundle has besides ``bundle.json`` (``examples.npy`` is optional)."""


# --------------------------------------------------------------------------- class table

def write_class_table(path, class_names):
    """Write ``label;label_idx`` lines (the layout of the archive's ``HOwt_doc.txt``), names kept as given."""
    write_class_doc(path, class_names, lower=False)


def read_class_table(path):
    """Class names in index order from a ``label;label_idx`` table (InputError naming file and line)."""
    try:
        return read_class_doc(path)
    except OSError as err:
        raise InputError(f"{path}: cannot read the class table: {err.strerror}") from None


# --------------------------------------------------------------------------- helpers

def _plain(value, where):
    """A JSON-able copy of ``value`` (numbers, strings, lists, dicts); InputError naming ``where`` otherwise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise InputError(f"{where}: {value!r} is not a finite number")
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise InputError(f"{where}: {type(value).__name__} cannot be stored in {BUNDLE_JSON}")


# --------------------------------------------------------------------------- the bundle

@dataclasses.dataclass
class Bundle:
    """A validated model bundle (see the module doc).  Build it with :func:`read_bundle`.

    Attributes
    ----------
    path : str                 the folder
    name : str
    classes : tuple of str     class names, index = class label = column of the probabilities
    channels : tuple of str    meaning of each input channel, index 0 first
    input_blob, output_blob : str
    input_shape : tuple        C x H x W of one crop
    mean : ndarray             float32 C x H x W, subtracted from every crop
    input_scale : float        multiplies ``crop - mean``
    metadata : dict            the whole ``bundle.json``
    """

    path: str
    name: str
    classes: tuple
    channels: tuple
    input_blob: str
    output_blob: str
    input_shape: tuple
    mean: np.ndarray
    input_scale: float
    metadata: dict

    @property
    def deploy_path(self):
        return os.path.join(self.path, DEPLOY)

    @property
    def weights_path(self):
        return os.path.join(self.path, WEIGHTS)

    @property
    def mean_path(self):
        return os.path.join(self.path, MEAN)

    @property
    def n_classes(self):
        return len(self.classes)

    def examples(self):
        """The bundle's example crops (uint8 N x C x H x W), or None when it has none."""
        path = os.path.join(self.path, EXAMPLES)
        if not os.path.exists(path):
            return None
        return np.load(path, allow_pickle=False)

    @property
    def net_files(self):
        """The net with its preprocessing (mean, input scale): what :class:`deepyeast.engine.inference.Predictor`
        and the predictions step take."""
        return NetFiles(self.deploy_path, self.weights_path, self.mean, self.input_scale, source=self.path)

    def preprocess(self, crops):
        """float32 ``(crops - mean) * input_scale`` for uint8 (or float) N x C x H x W ``crops``."""
        return self.net_files.preprocess(crops, self.input_shape)

    def predictor(self, settings=None, extra_blobs=(), **knobs):
        """A :class:`deepyeast.engine.inference.Predictor` of the bundle's net and preprocessing (load once,
        call on many batches of crops: uint8 N x C x H x W -> float32 N x K probabilities).

        ``settings``: an :class:`~deepyeast.engine.inference.InferenceSettings`, or its fields as keywords
        (``device``, ``precision``, ``batch``, ``fold``).  ``extra_blobs``: other blobs (e.g. ``fc1``)
        that the predictor's ``outputs(crops)`` returns beside the probabilities.
        """
        if settings is None:
            settings = InferenceSettings(**knobs)
        elif knobs:
            raise TypeError("give settings or its fields, not both")
        return Predictor(self.net_files, settings, keep=[self.output_blob, *extra_blobs])


def predict_crops(bundle, crops, settings=None, **knobs):
    """Class probabilities (float32 N x K) of uint8 N x C x H x W ``crops``.

    ``bundle`` is a :class:`Bundle` or a bundle folder; ``settings``/``knobs`` as :meth:`Bundle.predictor`.
    For many calls build :meth:`Bundle.predictor` once instead (the net is loaded on each call here).
    """
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle)
    return bundle.predictor(settings, **knobs)(crops)


# --------------------------------------------------------------------------- reading and validation

def _load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: missing; a model bundle carries its metadata in {BUNDLE_JSON} "
                         "(write bundles with deepyeast.model.write_bundle)") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _field(meta, key, kind, where):
    """``meta[key]`` checked against ``kind`` (a type or tuple of types); InputError naming ``where``."""
    if key not in meta:
        raise InputError(f"{where}: field '{key}' is missing")
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise InputError(f"{where}: field '{key}' is {value!r}, expected {names}")
    return value


def _check_net(folder, deploy_path, meta_path, input_blob, input_shape, output_blob, classes):
    """Build the deploy net with our engine, load the weights, check shapes; returns nothing."""
    from deepyeast.engine import Net

    net_param = read_prototxt(deploy_path, caffe_pb2.NetParameter)
    blob, shape = input_of(net_param, deploy_path)
    if blob != input_blob:
        raise InputError(f"{meta_path}: input.blob is {input_blob!r} but the Input layer of {deploy_path} "
                         f"feeds {blob!r}")
    if tuple(shape) != tuple(input_shape):
        raise InputError(f"{meta_path}: input.shape is {list(input_shape)} but {deploy_path} takes "
                         f"{list(shape)} (C x H x W)")
    net = Net(net_param, phase="TEST", seed=0, fuse=False)
    if output_blob not in net.blob_shapes:
        raise InputError(f"{meta_path}: output.blob {output_blob!r} is not a blob of {deploy_path} "
                         f"(outputs: {', '.join(net.output_names)})")
    out_shape = net.blob_shapes[output_blob]
    k = int(np.prod(out_shape[1:])) if len(out_shape) > 1 else 1
    if k != len(classes):
        raise InputError(f"{os.path.join(folder, CLASSES)}: {len(classes)} classes but blob {output_blob!r} of "
                         f"{deploy_path} has {k} values per cell (the last InnerProduct's num_output)")
    weights_path = os.path.join(folder, WEIGHTS)
    net.load_caffemodel(weights_path)  # refuses weights lacking a learned layer of the net, naming it


def read_bundle(path, verify=True, check_net=True):
    """Read and validate the bundle folder ``path``; returns a :class:`Bundle`.

    ``verify``: compare every file's sha256 with ``bundle.json``.
    ``check_net``: build the deploy net and load the weights into it (shapes
    of every layer; about a second).  Any disagreement raises
    :class:`deepyeast.utils.io.InputError` with one line naming the file and
    the field.
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: no model bundle folder here")
    meta_path = os.path.join(folder, BUNDLE_JSON)
    meta = _load_json(meta_path)
    if meta.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{meta_path}: field 'format' is {meta.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    version = _field(meta, "format_version", int, meta_path)
    if version > BUNDLE_FORMAT_VERSION:
        raise InputError(f"{meta_path}: format_version {version} is newer than this DeepYeast reads "
                         f"({BUNDLE_FORMAT_VERSION}); update DeepYeast")
    files = _field(meta, "files", dict, meta_path)
    for name in BUNDLE_FILES:
        if name not in files:
            raise InputError(f"{meta_path}: field 'files' does not list {name}")
    for name, info in files.items():
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise InputError(f"{meta_path}: files entry {name!r} is not a plain file name")
        fpath = os.path.join(folder, name)
        if not os.path.isfile(fpath):
            raise InputError(f"{fpath}: missing (listed in {BUNDLE_JSON})")
        if verify:
            want = info.get("sha256") if isinstance(info, dict) else None
            if not isinstance(want, str):
                raise InputError(f"{meta_path}: files.{name} has no sha256")
            got = file_digest(fpath, "sha256")
            if got != want:
                raise InputError(f"{fpath}: sha256 {got} does not match {want} in {BUNDLE_JSON}; "
                                 "the file was changed or damaged")

    classes = _field(meta, "classes", list, meta_path)
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise InputError(f"{meta_path}: field 'classes' must be a non-empty list of names")
    table = read_class_table(os.path.join(folder, CLASSES))
    if list(table) != list(classes):
        raise InputError(f"{os.path.join(folder, CLASSES)}: class table {table} disagrees with "
                         f"{BUNDLE_JSON} classes {classes}")

    inp = _field(meta, "input", dict, meta_path)
    where = f"{meta_path}: input"
    input_blob = _field(inp, "blob", str, where)
    shape = _field(inp, "shape", list, where)
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise InputError(f"{where}: field 'shape' is {shape!r}, expected [C, H, W]")
    channels = _field(inp, "channels", list, where)
    if len(channels) != shape[0]:
        raise InputError(f"{where}: {len(channels)} channel names for {shape[0]} input channels")
    scale = _field(inp, "scale", (int, float), where)
    if not math.isfinite(scale) or scale <= 0:
        raise InputError(f"{where}: field 'scale' is {scale!r}, expected a positive number")
    if inp.get("mean_file", MEAN) != MEAN:
        raise InputError(f"{where}: field 'mean_file' is {inp.get('mean_file')!r}, expected {MEAN!r}")

    out = _field(meta, "output", dict, meta_path)
    output_blob = _field(out, "blob", str, f"{meta_path}: output")

    mean = read_mean_binaryproto(os.path.join(folder, MEAN))
    check_mean_shape(mean, shape, source=os.path.join(folder, MEAN))
    examples = os.path.join(folder, EXAMPLES)
    if os.path.exists(examples):
        ex = np.load(examples, allow_pickle=False, mmap_mode="r")
        if ex.dtype != np.uint8 or ex.ndim != 4 or list(ex.shape[1:]) != list(shape):
            raise InputError(f"{examples}: holds {ex.dtype} {ex.shape}; expected uint8 N x "
                             f"{' x '.join(map(str, shape))} crops")
    if check_net:
        _check_net(folder, os.path.join(folder, DEPLOY), meta_path, input_blob, shape, output_blob, classes)
    return Bundle(path=folder, name=str(meta.get("name", "")), classes=tuple(classes), channels=tuple(channels),
                  input_blob=input_blob, output_blob=output_blob, input_shape=tuple(shape),
                  mean=np.ascontiguousarray(mean, np.float32), input_scale=float(scale), metadata=meta)


# --------------------------------------------------------------------------- writing

def _describe_file(path, sha1=False):
    info = {"bytes": os.path.getsize(path), "sha256": file_digest(path, "sha256")}
    if sha1:
        info["sha1"] = file_digest(path, "sha1")  # what Caffe's download_model_binary.py checks
    return info


@dataclasses.dataclass(frozen=True)
class BundleInfo:
    """What ``bundle.json`` and the readme say of a bundle besides its files.

    name : str
        The model's name.
    input_scale : float
        Multiplies ``crop - mean`` (Caffe's ``transform_param.scale``; 1 for nets trained here).
    output_blob : str
        The deploy net's probability blob.
    channels : sequence of str
        Meaning of each input channel (default :data:`deepyeast.constants.CHANNELS`).
    description, mean_note : str
        Free text for the readme (what the model is; what the mean image is).
    metrics, training, source : dict, optional
        Run metrics (name -> number or count dict ``{value, correct, total}``),
        training facts (data, schedule) and provenance, all JSON-able; shown in
        the readme and stored in ``bundle.json``.
    license : str
        Licence of the weights, for the readme's front matter.
    authors : sequence of str
        Who trained the weights (shown in the readme; exports name them as authors).
    """

    name: str = "DeepYeast"
    input_scale: float = 1.0
    output_blob: str = "prob"
    channels: tuple = CHANNELS
    description: str = ""
    mean_note: str = ""
    metrics: dict = None
    training: dict = None
    source: dict = None
    license: str = "MIT"
    authors: tuple = ()


def write_bundle(out_dir, deploy, weights, mean, classes, info=BundleInfo(), examples=None, ood=None):
    """Write a model bundle folder ``out_dir`` (replaced as a whole, atomically); returns its path.

    Parameters
    ----------
    deploy : str or caffe_pb2.NetParameter
        Deploy prototxt (copied byte for byte, comments kept) or a net to write.
    weights : str
        ``.caffemodel`` of that net (copied).
    mean : str or ndarray
        ``mean.binaryproto`` (copied) or a float C x H x W mean image (written).
    classes : sequence of str
        Class names, index = label = output column.
    info : BundleInfo
        Name, input scale, output blob, channels, readme texts, metrics, training facts,
        provenance, licence and authors.
    examples : ndarray, optional
        A few uint8 N x C x H x W crops kept as ``examples.npy`` (test input of exports).
    ood : (arrays, meta), optional
        Out-of-distribution statistics and the temperature
        (:func:`deepyeast.analysis.ood.fit_bundle_statistics`): the float arrays go to
        ``ood.npz``, ``meta`` to ``bundle.json`` under ``"ood"`` and the readme.

    The new folder is validated with :func:`read_bundle` before it replaces
    ``out_dir``; on any error nothing changes at ``out_dir``.
    """
    name, input_scale, output_blob, channels = info.name, info.input_scale, info.output_blob, info.channels
    description, mean_note, license, authors = info.description, info.mean_note, info.license, info.authors
    metrics, training, source = info.metrics, info.training, info.source
    classes = [str(c) for c in classes]
    if not classes:
        raise InputError("a model bundle needs a class table (no classes given)")
    if len(set(classes)) != len(classes):
        raise InputError(f"class names repeat: {classes}")
    if not (isinstance(input_scale, (int, float)) and math.isfinite(input_scale) and input_scale > 0):
        raise InputError(f"input_scale must be a positive number, got {input_scale!r}")
    metrics = _plain(dict(metrics or {}), "metrics")
    training = _plain(dict(training or {}), "training")
    source = _plain(dict(source or {}), "source")
    out_dir = os.fspath(out_dir)
    weights = os.fspath(weights)
    if not os.path.isfile(weights):
        raise InputError(f"{weights}: no such weights file")
    with atomic_folder(out_dir) as tmp:
        if isinstance(deploy, caffe_pb2.NetParameter):
            write_prototxt(os.path.join(tmp, DEPLOY), deploy)
            net_param = deploy
        else:
            deploy = os.fspath(deploy)
            net_param = read_prototxt(deploy, caffe_pb2.NetParameter)
            shutil.copyfile(deploy, os.path.join(tmp, DEPLOY))
        input_blob, shape = input_of(net_param, deploy if isinstance(deploy, str) else DEPLOY)
        shutil.copyfile(weights, os.path.join(tmp, WEIGHTS))
        if isinstance(mean, (str, os.PathLike)):
            mean_arr = read_mean_binaryproto(mean)
            check_mean_shape(mean_arr, shape, source=os.fspath(mean))
            shutil.copyfile(mean, os.path.join(tmp, MEAN))
        else:
            mean_arr = np.asarray(mean, np.float32)
            check_mean_shape(mean_arr, shape, source="mean image")
            write_mean_binaryproto(os.path.join(tmp, MEAN), mean_arr)
        write_class_table(os.path.join(tmp, CLASSES), classes)
        if examples is not None:
            ex = np.asarray(examples)
            if ex.dtype != np.uint8 or ex.ndim != 4 or tuple(ex.shape[1:]) != tuple(shape):
                raise InputError(f"examples are {ex.dtype} {ex.shape}; expected uint8 N x "
                                 f"{' x '.join(map(str, shape))} crops")
            np.save(os.path.join(tmp, EXAMPLES), np.ascontiguousarray(ex), allow_pickle=False)
        if ood is not None:
            np.savez(os.path.join(tmp, OOD), **{k: np.asarray(v) for k, v in ood[0].items()})
        files = {name_: _describe_file(os.path.join(tmp, name_), sha1=name_ == WEIGHTS)
                 for name_ in (DEPLOY, WEIGHTS, MEAN, CLASSES) + ((EXAMPLES,) if examples is not None else ())
                 + ((OOD,) if ood is not None else ())}
        meta = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "name": str(name),
            "description": str(description),
            "license": str(license),
            "authors": [str(a) for a in authors],
            "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
            "classes": classes,
            "input": {"blob": input_blob, "shape": [int(d) for d in shape], "dtype": "uint8",
                      "value_range": [0, 255], "channels": [str(c) for c in channels],
                      "mean_file": MEAN, "scale": float(input_scale), "mean_note": str(mean_note),
                      "formula": "(crop - mean) * scale, float32, as Caffe's DataTransformer"},
            "output": {"blob": output_blob, "kind": "softmax class probabilities, one column per class"},
            "training": training,
            "metrics": metrics,
            "source": source,
            "files": files,
        }
        if ood is not None:
            meta["ood"] = _plain(dict(ood[1]), "ood")
        from deepyeast.model.bundle_readme import render_readme

        readme = render_readme(meta)
        with open(os.path.join(tmp, README), "w", encoding="utf-8") as f:
            f.write(readme)
        meta["files"][README] = _describe_file(os.path.join(tmp, README))
        with open(os.path.join(tmp, BUNDLE_JSON), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        read_bundle(tmp)  # the same checks a reader makes; a failing bundle never appears
    return out_dir
