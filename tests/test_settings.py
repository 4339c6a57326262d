"""Knobs that travel together are one settings object: the launcher builds the run context once from
the shared options, summaries are written from the settings objects, and no library function takes
more than 8 parameters (docs/reference/layout.md, Settings)."""

import ast
import dataclasses
import os

import pytest

from deepyeast import launcher
from deepyeast.analysis.classify_screen import ClassifySettings
from deepyeast.data.micrographs import MicrographFormat
from deepyeast.data.segment_cells import CellFinding, SegmentParams
from deepyeast.utils.io import InputError
from deepyeast.utils.run_context import RunContext

from _data_helpers import REPO_ROOT

MAX_PARAMETERS = 8
WIDER = {"deepyeast.engine.net.Net.__init__": 11}
"""The one exception, with its count: Caffe's Net(param, phase, level, stages) and the torch compute knobs."""


def _run(options, argv, monkeypatch, environ=None):
    seen = {}
    for key, value in (environ or {}).items():
        monkeypatch.setenv(key, value)

    def run(args):
        seen["context"] = args.context
    code = launcher.main("A step.\n", options, run, argv=argv, prog="step.py", exit=False, command="step.py ...")
    return code, seen.get("context")


def test_the_launcher_builds_one_run_context_from_the_shared_options(monkeypatch, capsys):
    monkeypatch.delenv("DASK_SCHEDULER", raising=False)

    def options(p):
        launcher.add(p, "seed")
        launcher.add_cluster(p)

    code, ctx = _run(options, ["--seed", "5", "--jobs", "3", "--scheduler", "none"], monkeypatch)
    assert code == 0 and ctx == RunContext(seed=5, jobs=3, scheduler="none", command="step.py ...")
    code, ctx = _run(options, [], monkeypatch)
    assert code == 0 and ctx.seed == 0 and ctx.scheduler == "local" and ctx.jobs == (os.cpu_count() or 1)
    # a step without the options gets the library's defaults: seed 0, one process, no Dask
    code, ctx = _run(lambda p: None, [], monkeypatch)
    assert ctx == RunContext(command="step.py ...")
    # a bad scheduler from the environment is the step's one error line, exit 2, before it runs
    code, ctx = _run(options, [], monkeypatch, {"DASK_SCHEDULER": "ftp://nowhere"})
    err = capsys.readouterr().err
    assert code == 2 and ctx is None and err.startswith("step.py: error: DASK_SCHEDULER") and err.count("\n") == 1


def test_run_context_knobs():
    ctx = RunContext(seed=3)
    assert ctx.with_(seed=4) == RunContext(seed=4) and ctx.seed == 3
    lines = []
    RunContext(log=lines.append).say("hello")
    assert lines == ["hello"]
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        RunContext(jobs=0)


def test_summaries_are_written_from_the_settings():
    """The knobs' names in classify's summary.json and segment's params.json come from the settings objects."""
    fmt = MicrographFormat([1, 0], 12)
    assert fmt.channels == (1, 0) and fmt.describe() == {"channels": [1, 0], "bits": 12}
    with pytest.raises(InputError, match="marker's and the protein's index"):
        MicrographFormat((0, 1, 2))
    finding = CellFinding(SegmentParams(min_area=100), fmt, resegment=True)
    assert finding.describe() == dict(dataclasses.asdict(SegmentParams(min_area=100)), channels=[1, 0], bits=12,
                                      resegment=True)
    settings = ClassifySettings(finding)
    assert list(settings.describe(seed=7, chunk=16)) == [
        "segmentation", "channels", "bits", "resegment", "border", "precision", "device", "batch", "min_cells",
        "confidence", "dual_share", "gallery_cells", "seed", "chunk"]
    assert settings.describe(7, 16)["segmentation"]["min_area"] == 100


def _functions(path, module):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    item.qualname = f"{module}.{node.name}.{item.name}"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            if names[:1] in (["self"], ["cls"]):
                names = names[1:]
            yield getattr(node, "qualname", f"{module}.{node.name}"), len(names) + bool(a.vararg) + bool(a.kwarg)


def test_no_library_function_takes_more_than_eight_parameters():
    """Counted over deepyeast/ outside the step modules (deepyeast/commands/: argparse callbacks)."""
    wide = {}
    for folder, _, files in os.walk(os.path.join(REPO_ROOT, "deepyeast")):
        for name in files:
            path = os.path.join(folder, name)
            module = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
            if not name.endswith(".py") or name == "caffe_pb2.py" or module.startswith("deepyeast.commands"):
                continue
            wide.update({f: n for f, n in _functions(path, module) if n > MAX_PARAMETERS})
    assert wide == WIDER
