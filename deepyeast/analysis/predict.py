"""Per-cell class probabilities and layer features from a trained ``.caffemodel``.

Two engines run the same deploy prototxt and weights:

* ``"ours"``  -- :class:`deepyeast.engine.Net` (PyTorch, Caffe semantics), in this process;
* ``"caffe"`` -- real pycaffe inside the Caffe root (``make caffe``), through the stand-alone
  script :mod:`deepyeast.caffe.pycaffe_forward` (files in, files out).

Inputs are uint8 crops ``N x 2 x 64 x 64`` (channel 0 red marker, 1 green protein),
read from an archive and a split list (``ROOT/HOwt_test.txt``) or from a Datum LMDB.
The per-pixel training mean (``mean.binaryproto``, float32 ``2 x 64 x 64``) is
subtracted in float32 before the net, as the ``Data`` layer's ``mean_file`` does
in training.

Outputs: the predictions table (:mod:`deepyeast.analysis.prediction_table`:
``path,protein,split,label,pred,prob_0..prob_{K-1}``), and optionally features
``DIR/<blob>.npy`` (float32 ``N x D``, each cell's blob flattened in C x H x W
order, taken after the in-place BatchNorm/Scale/ReLU like Caffe's blob) with
``DIR/paths.txt`` (one cell path per row, same order).  With
``feature_reduce="pool"`` (the default) every blob with a spatial map (the conv blobs) is
written instead as ``DIR/<blob>.pool.npy``: float32 ``N x 2C``, each channel's
spatial mean followed by each channel's spatial max -- the reduction the
transfer analysis uses (:func:`deepyeast.analysis.features.layer_features`), at a few
KiB per cell instead of up to 1 MiB (conv1, conv2) -- plus ``DIR/<blob>.top.npz``, each
channel's 16 most activated cells with the position of their strongest unit (what the
activating-patch search needs; :mod:`deepyeast.caffe.feature_stream`).  Files are written
batch by batch: memory does not grow with the number of cells (the crops themselves are
held, 8 KiB per cell).
"""

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile

import numpy as np

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import check_mean_shape, read_mean_binaryproto
from deepyeast.caffe.feature_stream import TOP_SUFFIX, NpyWriter, TopActivations
from deepyeast.caffe.lmdb import iter_datum_lmdb, path_of_key
from deepyeast.caffe.prototxt import read_prototxt
from deepyeast.data.crop_png import iter_crops
from deepyeast.engine.inference import InferenceSettings, NetFiles, Predictor, input_of
from deepyeast.data.lists import class_names_for_list, protein_of, read_split_list, sample_rows
from deepyeast.constants import LIST_PREFIX, LMDB_SUFFIX, class_names_for
from deepyeast.utils.io import InputError
from deepyeast.analysis.features import feature_file, feature_folder
from deepyeast.utils.progress import progress
from deepyeast.analysis.prediction_table import Predictions, validate_predictions, write_predictions

ENGINES = ("ours", "caffe")
PYCAFFE_FORWARD = os.path.join(os.path.dirname(os.path.abspath(caffe_pb2.__file__)), "pycaffe_forward.py")


class CropFile:
    """Crops kept on disk, read back batch by batch: uint8 ``N x C x H x W`` with ndarray-like
    ``shape``, ``dtype``, ``len`` and slicing (``crops[a:b]`` is an ndarray).

    The rows live in an anonymous temporary file (deleted when closed or collected; 8 KiB per
    DeepYeast crop, in ``$TMPDIR``), read with plain reads rather than a memory map, so a step's
    resident memory does not grow with the number of cells.  Built by :meth:`from_iter`.
    """

    def __init__(self, file, shape, dtype=np.uint8):
        self._file = file
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self._row = int(np.prod(self.shape[1:])) * self.dtype.itemsize

    @classmethod
    def from_iter(cls, arrays, source, dir=None):
        """Write each C x H x W array of ``arrays`` as the next row; all must share one shape and
        dtype (else :class:`InputError` naming ``source`` and the row)."""
        f = tempfile.TemporaryFile(prefix=".crops-", dir=dir)
        first, n = None, 0
        try:
            for a in arrays:
                a = np.ascontiguousarray(a)
                if first is None:
                    first = (a.shape, a.dtype)
                elif (a.shape, a.dtype) != first:
                    raise InputError(f"{source}: crop {n} is {a.dtype} {a.shape}, crop 0 is {first[1]} {first[0]}")
                f.write(a.tobytes())
                n += 1
        except BaseException:
            f.close()
            raise
        if first is None:
            f.close()
            return None
        f.flush()
        return cls(f, (n,) + first[0], first[1])

    def __len__(self):
        return self.shape[0]

    @property
    def ndim(self):
        return len(self.shape)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self[index:index + 1 if index != -1 else None][0]
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("CropFile supports integers and contiguous slices")
        start, stop, _ = index.indices(self.shape[0])
        count = max(0, stop - start)
        data = os.pread(self._file.fileno(), count * self._row, start * self._row)
        if len(data) != count * self._row:
            raise OSError(f"crop file: short read at row {start}")
        return np.frombuffer(data, dtype=self.dtype).reshape((count,) + self.shape[1:]).copy()

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def close(self):
        self._file.close()


@dataclasses.dataclass
class Cells:
    """Cells to classify: ``images`` uint8 N x C x H x W (an ndarray or a :class:`CropFile`),
    ``labels`` int64 N, ``paths`` list of N str."""
    images: object
    labels: np.ndarray
    paths: list
    source: str

    @property
    def proteins(self):
        return [protein_of(p) for p in self.paths]


def split_from_name(path):
    """Split name from a list file or LMDB folder name (``HOwt_test.txt`` -> ``test``), or None."""
    base = os.path.basename(os.path.normpath(os.fspath(path)))
    m = re.match(r"^(?:" + re.escape(LIST_PREFIX) + r")?((?:transfer_)?(?:train|val|test))(?:\.txt|"
                 + re.escape(LMDB_SUFFIX) + r")$", base)
    return m.group(1) if m else None


def _crops_and_labels(records, paths, labels):
    """Yield the images of ``(path, image, label)`` records, collecting paths and labels."""
    for rel, image, label in records:
        paths.append(rel)
        labels.append(label)
        yield image


def _read_cells(root, entries, source, what, skip_bad):
    """:class:`Cells` of ``(relpath, label)`` entries under ``root``, the crops in a :class:`CropFile`;
    none readable is an InputError."""
    paths, labels = [], []
    images = CropFile.from_iter(_crops_and_labels(iter_crops(root, entries, skip_bad=skip_bad), paths, labels),
                                os.fspath(what))
    if images is None:
        raise InputError(f"{what}: none of the crops under {root} could be read")
    return Cells(images, np.asarray(labels, np.int64), paths, source)


def cells_from_list(archive, list_path, skip_bad=False, sample=None, seed=0):
    """Read the crops a split list names: ``ROOT/<relpath>`` PNGs with their labels.

    The class table (12 or 4 transfer classes) is chosen from the list's name.  ``sample``: only a
    seeded random ``sample`` of the listed cells, in list order (:func:`deepyeast.data.lists.sample_rows`).
    A missing or corrupt crop raises :class:`InputError` naming the file
    (with ``skip_bad`` it is left out instead).  The crops go to a :class:`CropFile`.
    """
    entries, _ = read_split_list(list_path, class_names_for_list(os.fspath(list_path)), skip_bad=skip_bad)
    if not entries:
        raise InputError(f"{list_path}: the split list names no cells")
    entries = [entries[i] for i in sample_rows(len(entries), sample, seed)]
    return _read_cells(archive, entries, os.fspath(list_path), list_path, skip_bad)


def cells_from_mixed(table_path, not_in=(), skip_bad=False):
    """Read the crops of the proteins of a mixed-protein table (:func:`deepyeast.data.lists.mixed_protein_cells`:
    ``plateNN/<f1>-*.png`` next to the table).  A cell's label is the protein's first compartment; the
    protein-level analysis reads both from the table.  ``not_in``: split lists they must be absent from."""
    from deepyeast.data.lists import MIXED_SPLIT, mixed_protein_cells

    entries = mixed_protein_cells(table_path, not_in=not_in)
    return _read_cells(os.path.dirname(os.path.abspath(table_path)), entries,
                       f"{MIXED_SPLIT}: {os.fspath(table_path)}", table_path, skip_bad)


def cells_from_lmdb(lmdb_path):
    """Read the cells of a Datum LMDB; a cell's path is its key without the ``%08d_`` prefix."""
    keys, labels = [], []
    images = CropFile.from_iter(_crops_and_labels(iter_datum_lmdb(lmdb_path), keys, labels), os.fspath(lmdb_path))
    if images is None:
        raise InputError(f"{lmdb_path}: the LMDB is empty")
    if images.dtype != np.uint8:
        raise InputError(f"{lmdb_path}: records hold float data; expected uint8 crops")
    return Cells(images, np.asarray(labels, np.int64), [path_of_key(k) for k in keys], os.fspath(lmdb_path))


def shape_net(model_path):
    """The deploy net's :meth:`deepyeast.engine.Net.for_shapes` (TEST phase): blob shapes, geometry."""
    from deepyeast.engine import Net

    return Net.for_shapes(model_path, "TEST")


def net_input_shape(model_path):
    """(name, C x H x W) of the deploy net's ``Input`` blob."""
    return input_of(read_prototxt(model_path, caffe_pb2.NetParameter), model_path)


def load_mean(mean_path, image_shape):
    """Read ``mean.binaryproto`` as float32 C x H x W and check it fits images of ``image_shape``."""
    mean = read_mean_binaryproto(mean_path)
    check_mean_shape(mean, image_shape, source=os.fspath(mean_path))
    return mean


def net_files(model_path, weights_path, mean_path):
    """:class:`NetFiles` of loose files: a deploy prototxt, its weights and ``mean.binaryproto`` (input scale 1).

    Files that belong to a model bundle (a ``bundle.json`` beside them) are refused with one line
    naming ``--bundle`` when they would not reproduce the bundle's preprocessing (its input scale is
    not 1, or the mean given is not its mean): predicting with them would be silently wrong (e.g. the
    authors' Keras model, converted, scales its input by 1/127.5).
    """
    for path in (model_path, weights_path, mean_path):
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file")
    _, input_shape = net_input_shape(model_path)
    mean = load_mean(mean_path, input_shape)
    for path in dict.fromkeys((model_path, weights_path, mean_path)):
        _refuse_part_of_bundle(path, mean)
    return NetFiles(os.fspath(model_path), os.fspath(weights_path), mean, 1.0)


def _refuse_part_of_bundle(path, mean):
    """InputError when ``path`` lies in a model bundle whose preprocessing (mean, scale) differs from ``mean``, 1."""
    from deepyeast.model.bundle import BUNDLE_JSON, read_bundle

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(os.path.join(folder, BUNDLE_JSON)):
        return
    try:
        bundle = read_bundle(folder, verify=False, check_net=False)
    except InputError as err:
        raise InputError(f"{path} belongs to a model bundle whose {BUNDLE_JSON} cannot be used ({err}); "
                         f"give --bundle {folder} once it is repaired") from None
    if bundle.input_scale != 1.0:
        why = f"scales its input by {bundle.input_scale:.6g}, which loose files cannot say"
    elif bundle.mean.shape != mean.shape or not np.array_equal(bundle.mean, mean):
        why = "subtracts another mean image than the --mean given"
    else:
        return
    raise InputError(f"{path} belongs to the model bundle {folder}, which {why}; give --bundle {folder} "
                     "instead of --model/--weights/--mean")


def _check_blobs(model_path, blobs):
    known = list(shape_net(model_path).blob_shapes)
    missing = [b for b in blobs if b not in known]
    if missing:
        raise InputError(f"{model_path}: no blob named {', '.join(missing)} (blobs: {', '.join(known)})")


def spatial_blobs(model_path):
    """Names of the deploy net's blobs that have a spatial map (4-D with H x W > 1)."""
    return [name for name, shape in shape_net(model_path).blob_shapes.items()
            if len(shape) == 4 and shape[2] * shape[3] > 1]


def forward_blobs(engine, model, images, blobs, out_dir, settings=InferenceSettings(), pool=()):
    """Run ``images`` through the net and write ``out_dir/<blob>.npy`` (float32 N x D) per blob.

    ``engine`` is ``"ours"`` or ``"caffe"``; ``model`` a :class:`NetFiles` (net, weights, mean,
    input scale); ``images`` uint8 (or float) N x C x H x W; ``blobs`` names of the net's blobs.
    Blobs also named in ``pool`` (4-D blobs) are written as ``out_dir/<blob>.pool.npy``: float32
    N x 2C, per-channel spatial mean then max.  ``settings``: :class:`InferenceSettings` (batch for
    both engines; device, precision and folding are our engine's: real Caffe runs float32 on the CPU).
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "caffe" and settings.precision != "fp32":
        raise InputError(f"precision {settings.precision}: real Caffe computes in float32; use the engine 'ours'")
    if engine == "caffe" and settings.device != "cpu":
        raise InputError(f"device {settings.device}: the Caffe root runs pycaffe on the CPU; use the engine 'ours'")
    blobs = list(dict.fromkeys(blobs))
    _check_blobs(model.deploy, blobs)
    pool = [b for b in pool if b in blobs]
    os.makedirs(out_dir, exist_ok=True)
    if engine == "ours":
        _forward_ours(Predictor(model, settings, keep=blobs), images, out_dir, pool)
    else:
        _forward_caffe(model, images, blobs, out_dir, settings.batch, pool)


def _forward_ours(predictor, images, out_dir, pool=()):
    """Write every blob the ``predictor`` keeps for ``images`` (see :func:`forward_blobs`), batch by batch."""
    import torch

    n = images.shape[0]
    outputs = {}
    tops = {b: TopActivations() for b in pool}
    with contextlib.ExitStack() as files:
        batches = predictor.batches(images)
        for _, out in progress(batches, desc="predict", unit="batch",
                               total=-(-n // predictor.settings.batch)):
            for b, data in out.items():
                if b in pool:
                    tops[b].update(data.cpu().numpy())
                    maps = data.reshape(data.shape[0], data.shape[1], -1)
                    data = torch.cat([maps.mean(dim=2), maps.amax(dim=2)], dim=1)
                data = data.contiguous().reshape(data.shape[0], -1).cpu().numpy()
                if b not in outputs:  # written batch by batch: memory does not grow with the cells
                    name = feature_file(b, pooled=b in pool)
                    outputs[b] = files.enter_context(NpyWriter(os.path.join(out_dir, name), n, data.shape[1]))
                outputs[b].write(data)
    for b, top in tops.items():
        top.save(os.path.join(out_dir, b + TOP_SUFFIX))


def _forward_caffe(model, images, blobs, out_dir, batch, pool=()):
    from deepyeast.caffe import root as caffe_root

    if not caffe_root.have_caffe_root():
        raise InputError(f"engine 'caffe': {caffe_root.missing_reason()}")
    with tempfile.TemporaryDirectory(prefix=".pycaffe-in-", dir=out_dir) as work:
        with NpyWriter(os.path.join(work, "images.npy"), images.shape[0], images.shape[1:], images.dtype) as w:
            for start in range(0, images.shape[0], 1000):  # the crops stay on disk (CropFile)
                w.write(images[start:start + 1000])
        args = ["--model", os.path.abspath(model.deploy), "--weights", os.path.abspath(model.weights),
                "--images", os.path.join(work, "images.npy"), "--out", os.path.abspath(out_dir),
                "--blobs", ",".join(blobs), "--pool", ",".join(pool), "--top", ",".join(pool), "--batch", str(batch),
                "--scale", repr(float(model.input_scale))]
        if model.mean is not None:
            np.save(os.path.join(work, "mean.npy"), np.asarray(model.mean, np.float32))
            args += ["--mean", os.path.join(work, "mean.npy")]
        binds = {os.path.dirname(os.path.abspath(p)) for p in (model.deploy, model.weights, out_dir)}
        proc = caffe_root.run_pycaffe(PYCAFFE_FORWARD, args, binds=sorted(binds), check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"pycaffe forward failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")


@dataclasses.dataclass(frozen=True)
class FeatureRequest:
    """Layer features to write beside the predictions.

    folder : str   receives ``<blob>.npy`` (or ``.pool.npy`` and ``.top.npz``) per blob and ``paths.txt``;
                   replaced as a whole, atomically
    blobs : tuple  blob names
    reduce : str   ``"pool"`` (blobs with a spatial map as ``<blob>.pool.npy``, N x 2C per-channel
                   mean and max, and ``<blob>.top.npz``, per-channel top activations) or ``"full"``
                   (whole blobs: 1 MiB per cell for conv1 alone)
    """

    folder: str
    blobs: tuple = ()
    reduce: str = "pool"

    def __post_init__(self):
        if self.reduce not in ("full", "pool"):
            raise ValueError(f"feature reduce must be 'full' or 'pool', not {self.reduce!r}")


def predict_cells(cells, model, settings=InferenceSettings(), engine="ours", split=None, out_csv=None,
                  features=None, prob_blob="prob"):
    """Classify ``cells`` (a :class:`Cells`) and write the predictions table and features.

    ``model``: a :class:`NetFiles` (:func:`net_files` of loose files, or a model bundle's
    :meth:`deepyeast.model.bundle.Bundle.net_files`, with its mean and input scale); ``settings``:
    :class:`InferenceSettings`; ``engine``: see :func:`forward_blobs`.
    Returns the validated :class:`deepyeast.analysis.prediction_table.Predictions`.  ``split``
    labels every row (default: from the source's name, e.g. ``HOwt_test.txt``).
    ``features``: a :class:`FeatureRequest` (which blobs, reduced how, into which folder).
    """
    split = split or split_from_name(cells.source)
    if not split:
        raise InputError(f"{cells.source}: cannot tell the split from the name; give it (--split test)")
    _, input_shape = net_input_shape(model.deploy)
    if tuple(cells.images.shape[1:]) != input_shape:
        raise InputError(f"{cells.source}: crops have shape {tuple(cells.images.shape[1:])} (C x H x W) but "
                         f"{model.where} expects {input_shape}")
    feature_blobs = [b for b in dict.fromkeys(features.blobs) if b] if features else []
    features_out = features.folder if features else None
    scratch_parent = os.path.dirname(os.path.abspath(features_out or out_csv or "."))
    os.makedirs(scratch_parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".predict-", dir=scratch_parent)
    try:
        pool = [b for b in spatial_blobs(model.deploy) if b in feature_blobs and b != prob_blob] \
            if features and features.reduce == "pool" else []
        forward_blobs(engine, model, cells.images, [prob_blob] + feature_blobs, work, settings, pool)
        probs = np.load(os.path.join(work, feature_file(prob_blob))).astype(np.float64)
        try:
            class_names = class_names_for(probs.shape[1])
        except ValueError as err:
            raise InputError(f"{model.where}: blob {prob_blob!r} has {probs.shape[1]} values per cell; {err}") from None
        n = len(cells.paths)
        table = Predictions(path=np.asarray(cells.paths, dtype=object),
                            protein=np.asarray(cells.proteins, dtype=object),
                            split=np.asarray([split] * n, dtype=object),
                            label=np.asarray(cells.labels, np.int64), pred=probs.argmax(axis=1).astype(np.int64),
                            probs=probs, class_names=class_names, source=cells.source)
        # a subset of cells need not hold every class
        validate_predictions(table, require_all_classes=False)
        if features_out:
            with feature_folder(features_out, cells.paths) as tmp:
                for b in feature_blobs:
                    for name in [feature_file(b, pooled=b in pool)] + ([b + TOP_SUFFIX] if b in pool else []):
                        src = os.path.join(work, name)
                        (shutil.copyfile if b == prob_blob else os.replace)(src, os.path.join(tmp, name))
        if out_csv:
            write_predictions(out_csv, table)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return table

