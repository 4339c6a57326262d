"""The one launcher of every step script (``data_prep/*.py``, ``analysis/*.py``, the ``deepyeast`` command).

A step script is a docstring, a function that adds the step's own options, and a function
that runs it::

    \"\"\"Protein-level calls from a predictions table (paper: 99% per protein).

    Example:
      python analysis/protein_level.py --predictions cells.csv --out runs/x/proteins
    \"\"\"
    from deepyeast import launcher

    def options(p):
        p.add_argument("--predictions", required=True, type=launcher.existing_file, help="...")
        launcher.add(p, "out", help="output folder")     # a shared option: same name, same meaning
        launcher.add(p, "seed")

    def run(args):
        ...                                              # raise InputError for bad input
        return 0                                         # or None; 1 when a check failed

    if __name__ == "__main__":
        launcher.main(__doc__, options, run)

What every step gets from :func:`main`:

* ``-h`` shows the docstring (first paragraph as description, the rest as epilog);
* the shared options of :data:`SHARED`, when the script adds them, with one name, one meaning
  and one type everywhere, and their old names as aliases (``--workers`` = ``--jobs``,
  ``--boot`` = ``--resamples``, ``--trees`` = ``--ntree``, ``--lmdb-dir`` = ``--lmdb``);
* ``INFO`` logging on stderr (``logging.getLogger(__name__)`` in the library; stdout is kept
  for the step's result line or JSON), and :mod:`deepyeast.utils.progress` bars on stderr;
* errors as one line on stderr, ``<script>: error: <message>``, and the documented exit code
  (:data:`EXIT_CODES`); no traceback for bad input.

Inputs are checked before anything is written: argument types (:func:`existing_file`,
:func:`existing_dir`) reject a missing input at parse time (exit 2), and the library
functions read and validate every input before their first write (outputs are atomic, see
:mod:`deepyeast.utils.io`).
"""

import argparse
import errno
import logging
import os
import sys

from deepyeast.constants import INFERENCE_PRECISIONS
from deepyeast.utils.io import InputError, StepFailed, check_writable, output_policy, write_error

__all__ = ["main", "run_guarded", "build_parser", "add", "add_force", "input_paths", "add_output_folder",
           "output_folder", "add_class_set",
           "add_micrograph_channels", "micrograph_format", "add_segment_params", "segment_params", "add_cluster", "SHARED", "EXIT_CODES",
           "EXIT_OK", "EXIT_CHECK_FAILED", "EXIT_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED",
           "existing_file", "existing_dir", "positive_int", "command_line", "run_context"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_INPUT = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_CHECK_FAILED: "the step ran and a check it makes failed (e.g. a protein in two splits)",
    EXIT_INPUT: "bad input or usage: a missing or malformed file, a bad option (one line names it)",
    EXIT_FAILED: "the step could not finish for a reason outside its input: network, diverged "
                 "training, a failing external tool (one line says what to do)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); nothing half-written is left under a final name",
}
"""Exit codes of every step script and of the ``deepyeast`` command."""


# ----------------------------------------------------------------------------- argument types

def _existing(check, what):
    def parse(path):
        if not check(path):
            raise argparse.ArgumentTypeError(f"{path}: no such {what}")
        return path
    parse.__name__ = f"existing {what}"
    return parse


existing_file = _existing(os.path.isfile, "file")
existing_file.__doc__ = "argparse type: a path that must be an existing file (else a usage error, exit 2)."
existing_dir = _existing(os.path.isdir, "folder")
existing_dir.__doc__ = "argparse type: a path that must be an existing folder (else a usage error, exit 2)."
existing_path = _existing(os.path.exists, "file or folder")
existing_path.__doc__ = "argparse type: a path that must be an existing file or folder (else a usage error, exit 2)."


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _jobs(text):
    """--jobs: N worker processes, or 0 / -1 for every CPU."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    return (os.cpu_count() or 1) if value <= 0 else value


def _scheduler(text):
    """--scheduler: none, local or a Dask scheduler's address (:mod:`deepyeast.analysis.cluster`)."""
    from deepyeast.analysis.cluster import check_scheduler

    try:
        return check_scheduler(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# ----------------------------------------------------------------------------- shared options

SHARED = {
    # key: (flags (canonical first, then old names kept as aliases), argparse keywords)
    "out": (("--out",), dict(metavar="PATH", help="where the step writes its output")),
    "jobs": (("--jobs", "--workers"),
             dict(type=_jobs, default=os.cpu_count() or 1, metavar="N",
                  help="worker processes (default: every CPU, %(default)s here; 0 also means every CPU)")),
    "seed": (("--seed",), dict(type=int, default=0, metavar="N",
                               help="seed of every random choice the step makes (default %(default)s)")),
    "resamples": (("--resamples", "--boot"),
                  dict(type=positive_int, default=2000, metavar="N",
                       help="bootstrap resamples for confidence intervals (default %(default)s)")),
    "ntree": (("--ntree", "--trees"),
              dict(type=positive_int, default=100, metavar="N", help="trees per random forest (default %(default)s)")),
    "lmdb": (("--lmdb", "--lmdb-dir"), dict(metavar="DIR", help="LMDB folder")),
    "model": (("--model",), dict(metavar="PROTOTXT", type=existing_file, help="deploy .prototxt of the net")),
    "weights": (("--weights",), dict(metavar="CAFFEMODEL", type=existing_file, help="trained .caffemodel")),
    "mean": (("--mean",), dict(metavar="BINARYPROTO", type=existing_file,
                               help="mean.binaryproto of the training set")),
    "bundle": (("--bundle",), dict(metavar="DIR", type=existing_dir,
                                   help="model bundle folder (RUN/model, make_bundle.py's or the Keras converter's "
                                        "output): the net with its mean and input scale")),
    "gpu": (("--gpu",), dict(type=int, metavar="ID", help="run the network on this CUDA device (default: CPU)")),
    "batch": (("--batch",), dict(type=positive_int, default=100, metavar="N",
                                 help="crops per forward pass (default %(default)s)")),
    "precision": (("--precision",), dict(choices=INFERENCE_PRECISIONS, default="fp32",
                                         help="arithmetic of the network: fp32 (Caffe's) or bf16 convolutions "
                                              "(about 2x faster on recent CPUs and GPUs; a few calls near a tie "
                                              "change) (default %(default)s)")),
    "archive": (("--archive",), dict(metavar="ROOT", type=existing_dir,
                                     help="archive root holding plateNN/*.png and the split lists")),
    "scheduler": (("--scheduler",),
                  dict(type=_scheduler, default=None, metavar="none|local|tcp://HOST:PORT",
                       help="where the step's tasks run: local = a Dask LocalCluster of --jobs worker processes; "
                            "tcp://HOST:PORT = a running Dask cluster; none = in this process, one after the "
                            "other, without Dask (default: $DASK_SCHEDULER if set, else local)")),
}
"""The options every step that has them shares: key -> (flags, argparse keywords).

``--out`` is where the step writes: a folder for every step with several outputs (data
preparation, the analyses, each with its ``result.json``), and the table itself for the three
steps whose product is one table other steps read (``predict.py``, ``cp_features.py``,
``random_forest.py``)."""


def add(parser, key, **overrides):
    """Add the shared option ``key`` of :data:`SHARED` to ``parser`` (keywords override the defaults:
    ``help``, ``default``, ``required``, ``metavar``, ...).  Returns the argparse action."""
    flags, kwargs = SHARED[key]
    kwargs = dict(kwargs, **overrides)
    kwargs.setdefault("dest", key)
    return parser.add_argument(*flags, **kwargs)


def add_output_folder(parser, help="output folder"):
    """``--out DIR`` plus the older positional form (``script.py INPUT OUT``) of the data steps;
    :func:`output_folder` resolves them."""
    parser.add_argument("out_positional", nargs="?", metavar="OUT", help="same as --out (older form)")
    add(parser, "out", metavar="DIR", help=help)


def output_folder(args):
    """The folder given by ``--out`` or positionally (:func:`add_output_folder`); InputError when neither."""
    out = args.out or args.out_positional
    if not out:
        raise InputError("give the output folder (--out DIR)")
    return out


def add_class_set(parser):
    """``--classes main|transfer`` (the class table and list names; ``--transfer`` is the older form)."""
    from deepyeast.constants import CLASS_SETS

    parser.add_argument("--classes", choices=sorted(CLASS_SETS), default="main",
                        help="class table and list names: main (HOwt_*) or transfer (HOwt_transfer_*)")
    parser.add_argument("--transfer", dest="classes", action="store_const", const="transfer",
                        help="same as --classes transfer")


def add_cluster(parser, what="tasks"):
    """``--scheduler`` and ``--jobs`` of the steps whose independent tasks (forests, CV folds,
    chunks of cells) run on Dask (:mod:`deepyeast.analysis.cluster`); ``what`` names the tasks.
    The run function resolves ``args.scheduler`` with
    :func:`deepyeast.analysis.cluster.resolve_scheduler` (None: ``$DASK_SCHEDULER``, else local)."""
    add(parser, "scheduler", help=SHARED["scheduler"][1]["help"].replace("the step's tasks", f"the {what}"))
    add(parser, "jobs", help="worker processes of --scheduler local (default: every CPU, %(default)s here)")


def add_micrograph_channels(parser):
    """``--channels MARKER PROTEIN`` and ``--bits N``: how the micrograph steps (``crop_cells.py``,
    ``segment_cells.py``) read multi-channel and 16-bit micrographs."""
    parser.add_argument("--channels", type=int, nargs=2, default=(0, 1), metavar=("MARKER", "PROTEIN"),
                        help="channel indices of the marker and the protein in multi-channel micrographs "
                             "(default: 0 1)")
    parser.add_argument("--bits", type=int, metavar="N",
                        help="bit depth of 16-bit micrographs (e.g. 12); rescaled to 8 bits (refused when values "
                             "exceed it)")



def micrograph_format(args):
    """The :class:`deepyeast.data.micrographs.MicrographFormat` of ``--channels`` and ``--bits``
    (:func:`add_micrograph_channels`)."""
    from deepyeast.data.micrographs import MicrographFormat

    return MicrographFormat(tuple(args.channels), args.bits)


def add_segment_params(parser):
    """The segmentation parameters (:class:`deepyeast.data.segment_cells.SegmentParams`) as options,
    ``--background-radius`` ... ``--border-margin``, each with its default, in their own group;
    :func:`segment_params` builds the parameters from the parsed arguments."""
    from deepyeast.data.segment_cells import PARAM_HELP, THRESHOLD_METHODS, SegmentParams

    defaults = SegmentParams()
    group = parser.add_argument_group("segmentation parameters")
    for name, help_text in PARAM_HELP.items():
        value = getattr(defaults, name)
        kw = dict(choices=THRESHOLD_METHODS) if name == "threshold_method" else dict(type=type(value))
        group.add_argument("--" + name.replace("_", "-"), default=value, help=f"{help_text} (default: %(default)s)",
                           **kw)
    return group


def inference_settings(args, fold=True):
    """The :class:`deepyeast.engine.inference.InferenceSettings` of the shared options ``--gpu``,
    ``--precision`` and ``--batch`` (those a step lacks keep their defaults)."""
    from deepyeast.engine.inference import InferenceSettings, device_of_gpu

    default = InferenceSettings()
    return InferenceSettings(device=device_of_gpu(getattr(args, "gpu", None)),
                             precision=getattr(args, "precision", default.precision),
                             batch=getattr(args, "batch", default.batch), fold=fold)


def segment_params(args):
    """The :class:`deepyeast.data.segment_cells.SegmentParams` of arguments parsed with :func:`add_segment_params`
    (InputError for values out of range)."""
    from deepyeast.data.segment_cells import PARAM_HELP, SegmentParams

    return SegmentParams(**{name: getattr(args, name) for name in PARAM_HELP})

class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser(doc, options, prog=None):
    """The parser of a step: description from ``doc``'s first paragraph, epilog the rest."""
    doc = (doc or "").strip("\n")
    head, _, rest = doc.partition("\n\n")
    parser = argparse.ArgumentParser(prog=prog, description=head, epilog=rest or None,
                                     formatter_class=_Formatter)
    if options is not None:
        options(parser)
    add_force(parser)
    return parser


def add_force(parser):
    """``--force`` on a parser that has an output option (:data:`OUTPUT_OPTIONS`) and no ``--force`` yet:
    an output folder may then replace a folder no DeepYeast step wrote (see
    :func:`deepyeast.utils.io.check_replaceable`)."""
    dests = {a.dest for a in parser._actions}
    if dests & set(OUTPUT_OPTIONS) and "force" not in dests:
        parser.add_argument("--force", action="store_true",
                            help="replace the output folder even when it holds files no DeepYeast step wrote "
                                 "(they are deleted)")


INPUT_TYPES = (existing_file, existing_dir, existing_path)
"""argparse types that mark an option as one of the step's inputs (:func:`input_paths`)."""


def input_paths(parser, args):
    """The paths of ``args`` given to options of ``parser`` typed as inputs (:data:`INPUT_TYPES`)."""
    paths = []
    for action in parser._actions:
        if action.type in INPUT_TYPES:
            value = getattr(args, action.dest, None)
            values = value if isinstance(value, (list, tuple)) else [value]
            paths += [v for v in values if isinstance(v, (str, os.PathLike))]
    return paths


# ----------------------------------------------------------------------------- running

_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}

OUTPUT_OPTIONS = ("out", "out_positional", "features_out")
"""Options (argparse dests) naming where a step writes: checked writable before the step runs."""

def _setup_logging():
    root = logging.getLogger("deepyeast")
    if not any(getattr(h, "_deepyeast_launcher", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._deepyeast_launcher = True
        root.addHandler(handler)
    if root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def run_guarded(func, args, prog, inputs=()):
    """Call ``func(args)`` and turn its outcome into an exit code, printing each error once.

    :class:`InputError` -> exit 2, :class:`StepFailed` -> exit 3 (one line each on stderr,
    ``prog: error: message``), ``KeyboardInterrupt`` -> 130; a return value of None -> 0.
    A disk that fills up (or a file-size limit) wherever it happens is one line naming the file,
    exit 3.  Any other exception is a bug and keeps its traceback.

    Before ``func`` runs, the outputs (:data:`OUTPUT_OPTIONS`, when the step has them) are checked to be
    writable (:func:`deepyeast.utils.io.check_writable`), so a bad output location is found
    before any work.  A folder output replaces only a folder a step wrote (unless ``args.force``) and never
    one of the step's ``inputs`` (:func:`input_paths`) or a folder holding one or inside one
    (:func:`deepyeast.utils.io.output_policy`, :func:`deepyeast.utils.io.check_replaceable`).
    """
    try:
        for key in OUTPUT_OPTIONS:
            if getattr(args, key, None):
                check_writable(getattr(args, key))
        with output_policy(force=getattr(args, "force", False), writer=prog, inputs=inputs):
            code = func(args)
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except StepFailed as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:
        if err.errno not in _DISK_FULL:
            raise
        print(f"{prog}: error: {write_error(err.filename or 'an output', err)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else int(code)


def run_context(args):
    """The :class:`deepyeast.utils.run_context.RunContext` of a step's parsed shared options:
    ``--seed`` (0 without it), ``--jobs`` (1 without it), ``--scheduler`` resolved
    (:func:`deepyeast.analysis.cluster.resolve_scheduler`; ``"none"`` for a step without it) and
    the command line (``args.command``).  Built once per step by :func:`main` as ``args.context``."""
    from deepyeast.utils.run_context import RunContext

    scheduler = "none"
    if hasattr(args, "scheduler"):
        from deepyeast.analysis.cluster import resolve_scheduler

        scheduler = resolve_scheduler(args.scheduler)
    return RunContext(seed=getattr(args, "seed", 0), jobs=getattr(args, "jobs", 1), scheduler=scheduler,
                      command=getattr(args, "command", None))


def _with_context(run):
    """``run`` with ``args.context`` set first (inside :func:`run_guarded`: a bad ``$DASK_SCHEDULER``
    is one error line)."""
    def run_with_context(args):
        args.context = run_context(args)
        return run(args)
    return run_with_context


def main(doc, options, run, argv=None, prog=None, exit=True, command=None):
    """Parse ``argv`` with the step's options and run it; exits with its code (see :data:`EXIT_CODES`).

    ``options(parser)`` adds the step's options, ``run(args)`` runs it and returns an exit code
    or None.  ``args.command`` holds the command line as one shell-quoted string (for the
    step's result manifest): ``command``, or by default the script's own command line.
    With ``exit=False`` the code is returned instead (tests, the ``deepyeast`` command).
    """
    prog = prog or os.path.basename(sys.argv[0]) or "deepyeast"
    parser = build_parser(doc, options, prog)
    args = parser.parse_args(argv)
    args.command = command or command_line(argv)
    _setup_logging()
    code = run_guarded(_with_context(run), args, prog, inputs=input_paths(parser, args))
    if exit:
        sys.exit(code)
    return code


def command_line(argv=None):
    """The command that ran, as one shell-quoted string (``python script.py --flag value``)."""
    import shlex

    argv = sys.argv if argv is None else [sys.argv[0]] + list(argv)
    return " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + list(argv))
