"""The resumable, chunked run of ``classify_screen``: micrographs -> cells, crops, network outputs.

The rows of an images table are cut into chunks of ``chunk`` micrographs.  Each chunk is one
task (:func:`chunk_task`: read, segment or take the given mask, crop, run the network, QC
measures), run where ``--scheduler`` says (:class:`deepyeast.analysis.cluster.TaskRunner`:
in this process, a LocalCluster of ``--jobs`` workers, or a running Dask cluster whose workers
read the micrographs by the table's paths, so they need the same file system).  The client
keeps each finished chunk as one file in the *work folder* beside the output,
``OUT.work/chunk-NNNNNN.npz``, so a run that is killed (``kill -9``, power loss) and started
again with the same command redoes only the chunks without a valid file.

What a chunk file holds does not depend on the scheduler, the number of workers or the order
in which chunks finish (a chunk is always computed the same way: its micrographs in table
order, its crops through the network in batches of ``batch``), so the tables are the same
whatever the scheduler and whether the run was interrupted.

Reuse rules
-----------
* ``OUT.work/run.json`` records the run's *fingerprint*: the sha256 of the images table, the
  model bundle's file digests and every setting that changes a chunk (segmentation
  parameters, channels, bits, border, precision, device, batch, chunk size).  A work folder
  with another fingerprint is refused with the differing parts named (``restart=True``
  discards it).  Settings used only after the chunks (protein-call thresholds, the report)
  may change between the interrupted run and the resumed one.
* A chunk file is reused only when it loads without error (the zip container's CRC-32 of
  every array is checked as it is read; no pickle), carries the run's fingerprint and the
  rows it should hold, its arrays agree in size, and each micrograph file still has the size
  and modification time recorded when it was read.  Anything else (a truncated or corrupt file,
  a micrograph replaced since) is redone, never merged.
* Files are written to a temporary name, flushed to disk and renamed, so a chunk file is
  either complete or absent after a kill.

Memory holds the per-cell table columns (about 100 bytes per cell plus 4 bytes per class),
never the crops (8 KiB per cell), which stream from the chunk files to one file on disk (the
report reads back the few it shows by position, not through a memory map).  The network runs with
only its wanted blobs kept (:meth:`deepyeast.engine.net.Net.forward` ``keep``) at a few padded
batch sizes (:data:`deepyeast.engine.inference.PAD_STEPS`), and a chunk task gives its process's
free heap pages back when the process has grown (:class:`deepyeast.engine.net.HeapRelease`), so a
process's memory does not grow with the number of chunks it has run.
"""

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
import zlib

import numpy as np

from deepyeast.analysis.qc import QC_COLUMNS, micrograph_qc
from deepyeast.data.crop_png import quiet_cv2
from deepyeast.data.segment_cells import CellFinding, cells_and_crops, row_cells
from deepyeast.engine.inference import InferenceSettings
from deepyeast.engine.net import HeapRelease
from deepyeast.utils.io import InputError, file_digest

log = logging.getLogger(__name__)

CHUNK = 16
"""Default micrographs per chunk (one task, one chunk file)."""
WORK_SUFFIX = ".work"
RUN_JSON = "run.json"
CHUNK_FORMAT = 2
"""2: the last batch of a chunk runs padded (:func:`deepyeast.engine.inference.padded_batch`), which may move
the probabilities by float32 rounding: a work folder of format 1 is refused naming the format (--restart)."""
PER_ROW = ("rows", "stamps", "ok", "reason", "source", "qc")
PER_CELL = ("row", "cell", "x", "y", "area", "padded", "probs", "crops", "ood_score")
STEPS = ("read_and_segment", "crops", "qc", "network", "ood", "fp32_comparison")
"""The steps of a chunk task, timed (wall seconds in the process that ran it) into ``step_seconds``:
reading a micrograph and finding its cells (segmentation or the given mask), measuring and cutting the
crops, the QC measures, the network, the out-of-distribution score, the fp32 rerun of ``compare_fp32``."""


@dataclasses.dataclass(frozen=True)
class ChunkSettings:
    """Everything a chunk's result depends on besides its rows (part of the run's fingerprint).

    model : str, the bundle folder; finding : :class:`deepyeast.data.segment_cells.CellFinding`
    (the micrographs' format, the segmentation, resegment, the crops' size and border);
    inference : :class:`deepyeast.engine.inference.InferenceSettings` (device, precision, batch,
    fold); compare_fp32 : bool; chunk : micrographs per chunk.
    """

    model: str
    finding: CellFinding = CellFinding()
    inference: InferenceSettings = InferenceSettings()
    compare_fp32: bool = False
    chunk: int = CHUNK

    def describe(self):
        """JSON-able dict of the settings (the model path left out: the model counts by its digests)."""
        f = self.finding
        return dict(params=dataclasses.asdict(f.params), **f.fmt.describe(), resegment=f.resegment, border=f.border,
                    inference=dataclasses.asdict(self.inference), compare_fp32=self.compare_fp32, chunk=self.chunk,
                    size=f.size)


def work_folder(out_dir):
    """The work folder of an output folder: ``OUT.work`` beside it."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    return out_dir.rstrip(os.sep) + WORK_SUFFIX


def fingerprint_parts(bundle, images_csv, settings, ood=None):
    """The parts of a run's fingerprint: {"table": sha256 of the images table (of a pattern folder's listing:
    :meth:`deepyeast.data.screen_folder.ImageFolder.digest`), "model": digest of the bundle's files,
    "settings": the settings dict}."""
    files = bundle.metadata.get("files", {})
    model = hashlib.sha256(json.dumps({k: v.get("sha256") for k, v in sorted(files.items())},
                                      sort_keys=True).encode()).hexdigest()
    table = images_csv.digest() if hasattr(images_csv, "digest") else file_digest(images_csv, "sha256")
    return {"format": CHUNK_FORMAT, "table": table, "model": model,
            "settings": settings.describe()}


def fingerprint(parts):
    """sha256 hex of the fingerprint parts (canonical JSON)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def row_stamp(rec):
    """``size:mtime_ns`` of every file an images-table row reads, joined by ``|`` (missing: ``-``)."""
    parts = []
    for key in ("path", "protein_path", "mask"):
        p = rec.get(key)
        if p is None:
            continue
        try:
            st = os.stat(p)
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


# --------------------------------------------------------------------------- the task

_PREDICTORS = {}
_HEAP = HeapRelease()
"""This process's guard of its heap (one per process: the client's, each Dask worker's)."""


def _predictors(settings, ood_blob):
    """(bundle, predictor, fp32 reference or None, OOD scorer or None), loaded once per process."""
    from deepyeast.analysis.ood import OodScorer
    from deepyeast.model import read_bundle

    key = (settings.model, settings.inference, settings.compare_fp32)
    if key not in _PREDICTORS:
        bundle = read_bundle(settings.model)
        scorer = OodScorer.from_bundle(bundle)
        extra = (scorer.blob,) if scorer is not None else ()
        predictor = bundle.predictor(settings.inference, extra_blobs=extra)
        reference = (bundle.predictor(dataclasses.replace(settings.inference, precision="fp32"))
                     if settings.compare_fp32 and settings.inference.precision != "fp32" else None)
        _PREDICTORS.clear()
        _PREDICTORS[key] = (bundle, predictor, reference, scorer)
    return _PREDICTORS[key]


def chunk_task(item, settings):
    """Compute one chunk: ``item`` = (chunk index, list of images-table row dicts).

    Returns a dict of arrays (see :data:`PER_ROW`, :data:`PER_CELL`; ``row`` is the position of a
    cell's micrograph within the chunk), plus ``probs_fp32`` with ``compare_fp32`` and ``pid``,
    the process that ran it.  A bad row is recorded (``ok`` 0, ``reason``), not raised.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic in every process: results do not depend on the scheduler
    # OpenCV (segmentation) one thread too: a LocalCluster has a worker per core, and each worker's OpenCV
    # would otherwise start a thread per core (16 workers x 16 threads on a 16-core machine)
    cv2 = quiet_cv2()
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return _chunk(item, settings)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def _chunk(item, settings):
    index, recs = item
    bundle, predictor, reference, scorer = _predictors(settings, None)
    n = len(recs)
    ok = np.zeros(n, np.int8)
    reason = [""] * n
    source = [""] * n
    qc = np.full((n, len(QC_COLUMNS)), np.nan)
    stamps = [row_stamp(r) for r in recs]
    cols = {k: [] for k in ("row", "cell", "x", "y", "area", "padded", "crops")}
    seconds = dict.fromkeys(STEPS, 0.0)
    clock = [time.perf_counter()]

    def lap(step):
        now = time.perf_counter()
        seconds[step] += now - clock[0]
        clock[0] = now

    for j, rec in enumerate(recs):
        try:
            micro, mask, info = row_cells(rec, settings.finding)
            lap("read_and_segment")
            _, cells, crops = cells_and_crops(micro, mask, size=settings.finding.size, border=settings.finding.border)
            lap("crops")
        except InputError as e:
            reason[j] = str(e)
            continue
        ok[j] = 1
        source[j] = info["source"]
        m = len(crops)
        measures = micrograph_qc(micro, mask, m)
        qc[j] = [measures[c] for c in QC_COLUMNS]
        lap("qc")
        cols["row"].append(np.full(m, j, np.int64))
        for name in ("cell", "x", "y", "area", "padded"):
            cols[name].append(np.asarray(cells[name]))
        cols["crops"].append(np.ascontiguousarray(crops, np.uint8))
    c, s = bundle.input_shape[0], settings.finding.size

    def cat(name, dtype, shape=()):
        return np.concatenate(cols[name]).astype(dtype) if cols[name] else np.zeros((0,) + shape, dtype)

    crops = cat("crops", np.uint8, (c, s, s))
    lap("crops")
    out = predictor.outputs(crops)
    probs = out[predictor.keep[0]].astype(np.float32)
    lap("network")
    ood = scorer.score(out[scorer.blob], crops) if scorer is not None else np.full(len(crops), np.nan, np.float32)
    lap("ood")
    result = {"index": np.int64(index), "rows": np.asarray([r["position"] for r in recs], np.int64),
              "stamps": np.asarray(stamps, str), "ok": ok, "reason": np.asarray(reason, str),
              "source": np.asarray(source, str), "qc": qc, "row": cat("row", np.int64), "cell": cat("cell", np.int64),
              "x": cat("x", np.float64), "y": cat("y", np.float64), "area": cat("area", np.int64),
              "padded": cat("padded", bool), "probs": probs, "crops": crops,
              "ood_score": np.asarray(ood, np.float32), "pid": np.int64(os.getpid())}
    if reference is not None:
        result["probs_fp32"] = reference(crops).astype(np.float32)
        lap("fp32_comparison")
    result["step_seconds"] = np.asarray([seconds[k] for k in STEPS], np.float64)
    # the heap is kept between network passes for speed and fragments over many chunks: its free pages go
    # back when this process has grown (not after every chunk: the next pass would fault its activations in)
    _HEAP.after_work()
    return result


# --------------------------------------------------------------------------- chunk files

def chunk_path(work, index):
    return os.path.join(work, f"chunk-{index:06d}.npz")


def write_chunk(work, result, fp):
    """Write a chunk's result as ``work/chunk-NNNNNN.npz``: temporary name, fsync, rename."""
    path = chunk_path(work, int(result["index"]))
    fd, tmp = tempfile.mkstemp(prefix=".chunk-", suffix=".tmp", dir=work)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, fingerprint=np.asarray(fp), format=np.int64(CHUNK_FORMAT), **result)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_chunk(path, fp, rows, stamps, want_fp32):
    """The chunk file's arrays when it is valid for these rows (see the module doc), else None."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}  # reading each member checks its CRC-32
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        log.warning("%s: unreadable chunk file (%s); redoing it", path, e)
        return None
    try:
        n_cells = len(data["row"])
        valid = (str(data["fingerprint"]) == fp and int(data["format"]) == CHUNK_FORMAT
                 and np.array_equal(data["rows"], rows) and list(data["stamps"]) == list(stamps)
                 and all(len(data[k]) == len(rows) for k in PER_ROW)
                 and all(len(data[k]) == n_cells for k in PER_CELL)
                 and int(np.sum(data["qc"][data["ok"] == 1, 0])) == n_cells
                 and (not want_fp32 or len(data.get("probs_fp32", ())) == n_cells))
    except (KeyError, ValueError, TypeError, IndexError):
        valid = False
    if not valid:
        log.warning("%s: chunk file does not match this run's rows, settings or micrograph files; redoing it", path)
        return None
    return data


def prepare_work(work, parts, restart):
    """Create or check the work folder ``work`` for a run with these fingerprint ``parts``.

    A folder holding another run is refused naming what differs (or emptied with ``restart``).
    Returns the fingerprint.
    """
    fp = fingerprint(parts)
    meta_path = os.path.join(work, RUN_JSON)
    if os.path.isdir(work) and restart:
        shutil.rmtree(work)
    if os.path.isdir(work):
        try:
            with open(meta_path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        if old is None:
            if any(not n.startswith(".") for n in os.listdir(work)):
                raise InputError(f"{work}: a work folder without a readable {RUN_JSON}; remove it or pass --restart")
        elif old.get("fingerprint") != fp:
            differ = [k for k in ("table", "model", "format") if old.get("parts", {}).get(k) != parts[k]]
            oldset, newset = old.get("parts", {}).get("settings", {}), parts["settings"]
            differ += [f"setting {k}" for k in sorted(set(oldset) | set(newset)) if oldset.get(k) != newset.get(k)]
            raise InputError(f"{work}: holds an unfinished run with another "
                             f"{', '.join(d.replace('table', 'images table') for d in differ) or 'set-up'}; "
                             "run again with the same model, table and settings to finish it, or pass --restart "
                             "to discard it")
    os.makedirs(work, exist_ok=True)
    for name in os.listdir(work):  # temporaries of a killed writer
        if name.startswith(".chunk-") and name.endswith(".tmp"):
            os.unlink(os.path.join(work, name))
    if not os.path.exists(meta_path):
        fd, tmp = tempfile.mkstemp(prefix=".run-", suffix=".tmp", dir=work)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"fingerprint": fp, "parts": parts}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, meta_path)
    return fp


def chunks_of(rows, size):
    """``[(index, rows[i:i + size]), ...]``."""
    return [(i // size, rows[i:i + size]) for i in range(0, len(rows), size)]


@dataclasses.dataclass
class ChunkRun:
    """What :func:`run_chunks` did.

    chunks : list of (index, row dicts), every chunk of the run; reused : int, micrographs taken over
    from valid chunk files; computed : int, micrographs computed by this call; pids : sorted list of
    the processes that ran tasks; seconds : float, wall time of the call; step_seconds : dict
    :data:`STEPS` -> seconds summed over the chunks this call computed (each task's own wall time, in
    the process that ran it: with several workers they add up to more than ``seconds``).
    """

    chunks: list
    reused: int = 0
    computed: int = 0
    pids: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    step_seconds: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))

    def describe(self):
        """The JSON-able record of summary.json's ``run`` (besides the scheduler and jobs)."""
        return {"chunks": len(self.chunks), "task_pids": list(self.pids), "computed_micrographs": self.computed,
                "seconds": round(self.seconds, 3),
                "task_seconds": {k: round(v, 3) for k, v in self.step_seconds.items()}}


def run_chunks(rows, work, fp, settings, scheduler="none", jobs=1, skip_bad=False, progress=True):
    """Make sure every chunk of ``rows`` has a valid file in ``work``.

    Each row dict needs ``position`` (its index in ``rows``).  Chunks without a valid file run as
    tasks on ``scheduler`` (:class:`deepyeast.analysis.cluster.TaskRunner`), at most four per
    worker at a time; each is written as it finishes.  Without ``skip_bad`` the first bad row of a
    finished chunk stops the run (``InputError`` naming table row and file); the chunks written
    so far are kept for the next run.  Returns a :class:`ChunkRun`.
    """
    from deepyeast.analysis.cluster import TaskRunner
    from deepyeast.utils.progress import progress as progress_bar

    start = time.perf_counter()
    chunks = chunks_of(rows, settings.chunk)
    run = ChunkRun(chunks)
    todo = []
    for index, recs in chunks:
        data = read_chunk(chunk_path(work, index), fp, [r["position"] for r in recs], [row_stamp(r) for r in recs],
                          settings.compare_fp32 and settings.inference.precision != "fp32")
        if data is None:
            todo.append((index, recs))
        else:
            run.reused += len(recs)
    pids = set()
    if todo:
        bar = progress_bar(total=sum(len(r) for _, r in todo), desc="classify", unit="image",
                           enabled=None if progress else False)
        with TaskRunner(scheduler, jobs=jobs, log=log.info) as runner:
            for _, result in runner.as_completed(chunk_task, todo, settings, window=runner.default_window()):
                write_chunk(work, result, fp)
                pids.add(int(result["pid"]))
                run.computed += len(result["rows"])
                for k, v in zip(STEPS, result["step_seconds"]):
                    run.step_seconds[k] += float(v)
                bad = np.flatnonzero(result["ok"] == 0)
                if len(bad) and not skip_bad:
                    rec = rows[int(result["rows"][bad[0]])]
                    reason = str(result["reason"][bad[0]])
                    raise InputError(reason if reason.startswith(rec["where"]) else f"{rec['where']}: {reason}")
                bar.update(len(result["rows"]))
        bar.close()
    run.pids = sorted(pids)
    run.seconds = time.perf_counter() - start
    return run
