"""The ``deepyeast`` command: one registry of every subcommand (``deepyeast --help`` lists them).

Two kinds of subcommand share the one command:

* the engine's Caffe verbs (``train``, ``test``, ``time``, ``extract``, ``bnstats``), with Caffe's
  single-dash flags (:data:`deepyeast.engine.cli.ACTIONS`, parsed by its ``build_parser``), run here
  with the launcher's exit codes and error lines;
* the steps: one module of this package each (``deepyeast/commands/<module>.py``: a docstring,
  ``options(parser)`` and ``run(args)``, run by :func:`deepyeast.launcher.main`), which the scripts
  under ``data_prep/`` and ``analysis/`` also run, as thin callers of the same module, so
  ``deepyeast classify ...`` and ``python analysis/classify_screen.py ...`` take the same flags
  and give the same exit codes (:data:`deepyeast.launcher.EXIT_CODES`).

:data:`STEPS` is the one table of the steps: adding a step is a module here, a thin script and one
row.  :func:`build_parser` gives any subcommand's argparse parser (the documentation's command
reference is generated from it, ``docs/hooks.py``).
"""

import ast
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass

__all__ = ["Step", "STEPS", "ENGINE_VERBS", "GROUPS", "names", "summary", "build_parser", "help_text", "main"]


@dataclass(frozen=True)
class Step:
    """One subcommand run by the launcher: ``deepyeast <name>`` = ``python <script>``."""

    name: str       # the subcommand, e.g. "classify"
    module: str     # its module in this package, e.g. "classify_screen"
    script: str     # the thin script calling it, relative to the repository, e.g. "analysis/classify_screen.py"
    group: str      # the heading it is listed under in ``deepyeast --help``

    @property
    def dotted(self):
        """The step's importable module (``deepyeast.commands.<module>``)."""
        return f"{__name__}.{self.module}"


_GET, _NEW, _PAPER, _MODEL = ("get data", "classify a new screen", "reproduce the paper", "model bundles")
GROUPS = (_NEW, _MODEL, _GET, _PAPER, "engine (Caffe's verbs and flags)")
"""Headings of ``deepyeast --help``, in order."""

STEPS = (
    Step("segment", "segment_cells", "data_prep/segment_cells.py", _NEW),
    Step("crop", "crop_cells", "data_prep/crop_cells.py", _NEW),
    Step("classify", "classify_screen", "analysis/classify_screen.py", _NEW),
    Step("compare", "compare_screens", "analysis/compare_screens.py", _NEW),
    Step("predict", "predict", "analysis/predict.py", _NEW),
    Step("bundle", "make_bundle", "analysis/make_bundle.py", _MODEL),
    Step("export-bioimageio", "export_bioimageio", "analysis/export_bioimageio.py", _MODEL),
    Step("convert-keras", "convert_keras_weights", "analysis/convert_keras_weights.py", _MODEL),
    Step("fetch-weights", "fetch_weights", "data_prep/fetch_weights.py", _GET),
    Step("fetch-archive", "fetch_archive", "data_prep/fetch_archive.py", _GET),
    Step("synthetic", "make_synthetic", "data_prep/make_synthetic.py", _GET),
    Step("check-splits", "check_splits", "data_prep/check_splits.py", _PAPER),
    Step("make-lmdb", "make_lmdb", "data_prep/make_lmdb.py", _PAPER),
    Step("run-config", "make_run_config", "data_prep/make_run_config.py", _PAPER),
    Step("choose-snapshot", "choose_snapshot", "data_prep/choose_snapshot.py", _PAPER),
    Step("evaluate-cells", "evaluate_cells", "analysis/evaluate_cells.py", _PAPER),
    Step("protein-level", "protein_level", "analysis/protein_level.py", _PAPER),
    Step("quality-filter", "quality_filter", "analysis/quality_filter.py", _PAPER),
    Step("cp-features", "cp_features", "analysis/cp_features.py", _PAPER),
    Step("random-forest", "random_forest", "analysis/random_forest.py", _PAPER),
    Step("interpret", "interpret", "analysis/interpret.py", _PAPER),
    Step("transfer", "transfer", "analysis/transfer.py", _PAPER),
    Step("paper-results", "paper_results", "analysis/paper_results.py", _PAPER),
    Step("report", "make_report", "analysis/make_report.py", _PAPER),
)
"""Every step subcommand, in the order ``deepyeast --help`` lists them within a group."""

ENGINE_VERBS = ("train", "test", "time", "extract", "bnstats")
"""The engine's subcommands (:mod:`deepyeast.engine.cli`)."""

_BY_NAME = {s.name: s for s in STEPS}
assert not set(_BY_NAME) & set(ENGINE_VERBS) and len(_BY_NAME) == len(STEPS)


def names():
    """Every subcommand: the steps, then the engine's verbs."""
    return [s.name for s in STEPS] + list(ENGINE_VERBS)


def _docstring(step):
    """A step module's docstring, read without importing it (``--help`` stays fast)."""
    origin = importlib.util.find_spec(step.dotted).origin
    with open(origin, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read(), origin)) or ""


def _engine_subparsers():
    from deepyeast.engine.cli import build_parser as engine_parser

    parser = engine_parser()
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    helps = {a.dest: a.help for a in action._choices_actions}
    return action.choices, helps


def summary(name):
    """The one-line description of subcommand ``name`` (a step's docstring's first line)."""
    if name in _BY_NAME:
        return _docstring(_BY_NAME[name]).splitlines()[0].rstrip(".")
    return _engine_subparsers()[1][name]


def _as_command(doc, step):
    """The step's docstring with its examples spelt as ``deepyeast <name>`` instead of ``python <script>``."""
    return re.sub(rf"python3? {re.escape(step.script)}\b", f"deepyeast {step.name}", doc)


def build_parser(name):
    """The argparse parser of ``deepyeast <name>`` (the same options as its script)."""
    from deepyeast import launcher

    if name in _BY_NAME:
        step = _BY_NAME[name]
        module = importlib.import_module(step.dotted)
        return launcher.build_parser(_as_command(module.__doc__, step), module.options, prog=f"deepyeast {name}")
    return _engine_subparsers()[0][name]


def help_text():
    """``deepyeast --help``: usage, every subcommand with its one-line description, the exit codes."""
    from deepyeast.launcher import EXIT_CODES

    width = max(map(len, names())) + 2
    lines = ["usage: deepyeast COMMAND [options]   (deepyeast COMMAND -h: the command's options)", "",
             "DeepYeast (Parnamaa & Parts, G3 2017): classify yeast proteins' subcellular localisation "
             "from micrographs, and reproduce the paper.", ""]
    _, engine_helps = _engine_subparsers()
    for group in GROUPS:
        lines.append(group + ":")
        if group.startswith("engine"):
            rows = [(v, engine_helps[v]) for v in ENGINE_VERBS]
        else:
            rows = [(s.name, summary(s.name)) for s in STEPS if s.group == group]
        lines += [f"  {n:<{width}}{text}" for n, text in rows]
        lines.append("")
    lines.append("exit codes:")
    lines += [f"  {code:<{width}}{text}" for code, text in EXIT_CODES.items()]
    return "\n".join(lines)


def main(argv=None):
    """Run ``deepyeast COMMAND ...``; returns the exit code (:data:`deepyeast.launcher.EXIT_CODES`)."""
    from deepyeast import launcher

    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_text(), file=sys.stdout if argv else sys.stderr)
        return launcher.EXIT_OK if argv else launcher.EXIT_INPUT
    if argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"deepyeast {version('deepyeast')}")
        except PackageNotFoundError:
            print("deepyeast (not installed)")
        return launcher.EXIT_OK
    name, rest = argv[0], argv[1:]
    if name in ENGINE_VERBS:
        return _run_engine(argv)
    if name not in _BY_NAME:
        close = [n for n in names() if n.startswith(name[:3])] if len(name) >= 3 else []
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        print(f"deepyeast: error: no command {name!r}{hint}; deepyeast --help lists them", file=sys.stderr)
        return launcher.EXIT_INPUT
    step = _BY_NAME[name]
    module = importlib.import_module(step.dotted)
    prog = f"deepyeast {name}"
    return launcher.main(_as_command(module.__doc__, step), module.options, module.run, rest, prog=prog, exit=False,
                         command=launcher.command_line(argv))


def _run_engine(argv):
    """``deepyeast VERB ...`` for the engine's verbs: Caffe's log format, each error once as
    ``deepyeast VERB: error: ...`` (bad input 2, diverged training 3)."""
    from deepyeast import launcher
    from deepyeast.engine.cli import ACTIONS, build_parser as engine_parser
    from deepyeast.engine.solver import setup_caffe_logging

    args = engine_parser().parse_args(argv)
    setup_caffe_logging()
    action = ACTIONS[args.action]

    def run(a):
        action(a)  # its return value is for callers in Python, not an exit code

    return launcher.run_guarded(run, args, f"deepyeast {args.action}")
