"""How a step runs, apart from what it computes: one object the launcher builds once per step.

:class:`RunContext` holds the knobs every step shares -- the seed of its random choices, its
worker processes and where its tasks run, whether it draws progress bars, the command line
that ran it (for its result manifest) and where its log lines go -- so that library functions
take one argument for them instead of five, with one name and one default each.  The launcher
builds it from the shared options (:func:`deepyeast.launcher.run_context`); library callers
(tests, benchmarks) build it directly: ``RunContext(seed=3, scheduler="none")``.
"""

import dataclasses
import logging
from typing import Callable, Optional

_log = logging.getLogger("deepyeast")


@dataclasses.dataclass(frozen=True)
class RunContext:
    """The shared knobs of one run of a step.

    * ``seed``: int, seed of every random choice the step makes (default 0);
    * ``jobs``: int >= 1, worker processes (default 1: this process only);
    * ``scheduler``: ``"none"`` (in this process, the default), ``"local"`` (a Dask
      LocalCluster of ``jobs`` workers) or a Dask scheduler's address (checked by
      :func:`deepyeast.analysis.cluster.check_scheduler` where it is used);
    * ``progress``: bool, progress bars on stderr (default True);
    * ``command``: the command line that ran the step, one shell-quoted string, or None;
    * ``log``: a callable taking one message string, or None for the ``deepyeast`` logger's INFO.
    """

    seed: int = 0
    jobs: int = 1
    scheduler: str = "none"
    progress: bool = True
    command: Optional[str] = None
    log: Optional[Callable[[str], None]] = None

    def __post_init__(self):
        if int(self.jobs) < 1:
            raise ValueError(f"jobs must be at least 1, got {self.jobs}")

    def say(self, message):
        """Send one log line to ``log`` (the ``deepyeast`` logger's INFO when None)."""
        (self.log or _log.info)(message)

    def with_(self, **changes):
        """A copy with some knobs changed (``context.with_(seed=context.seed + 1)``)."""
        return dataclasses.replace(self, **changes)
