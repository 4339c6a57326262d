"""The one progress reporter of DeepYeast: on stderr, with an estimate of the time left.

On a terminal it is a ``tqdm`` bar.  Anywhere else (``make`` piping a step into a log, CI)
it writes a plain line at most every ``every`` seconds and one at the end::

    [cp features] 1,200/6,000 cells (20%), 18 s elapsed, about 1 min 12 s left

so a long step in a log still says how far it is.  ``DEEPYEAST_PROGRESS`` overrides the
choice: ``bar``, ``lines`` or ``off`` (default ``auto``: bar on a terminal, lines otherwise).

Use it around an iterable or as a context manager::

    for cell in progress(cells, desc="cp features", unit="cell"):
        ...
    with progress(total=n_iter, desc="train", unit="it") as bar:
        bar.update(1)
"""

import os
import sys
import time

__all__ = ["progress", "Progress", "format_duration"]

MODES = ("auto", "bar", "lines", "off")


def format_duration(seconds):
    """``75`` -> ``"1 min 15 s"``; ``3725`` -> ``"1 h 2 min"``; under a minute ``"42 s"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m} min"


def _mode(enabled):
    if enabled is False:
        return "off"
    mode = os.environ.get("DEEPYEAST_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        mode = "auto"
    if enabled is True and mode in ("auto", "off"):
        mode = "auto"
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return mode


class Progress:
    """Progress of ``total`` units of work (None: unknown) reported on stderr; see the module doc."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", enabled=None, every=30.0, stream=None):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.every = float(every)
        self.stream = stream or sys.stderr
        self.mode = _mode(enabled)
        self.n = 0
        self.start = time.monotonic()
        self._last = self.start
        self._bar = None
        self._closed = False
        if self.mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False, dynamic_ncols=True)

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(finished=exc[0] is None)
        return False

    def update(self, n=1):
        """Count ``n`` more units done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last >= self.every:
                self._last = now
                self._line()

    def _line(self, final=False):
        elapsed = time.monotonic() - self.start
        done = f"{self.n:,}"
        units = self.unit if self.unit.endswith(("s", "B")) else self.unit + "s"
        if self.total:
            done += f"/{self.total:,} {units} ({100.0 * self.n / self.total:.0f}%)"
        else:
            done += f" {units}"
        text = f"[{self.desc}] {done}, {format_duration(elapsed)} elapsed"
        if final:
            text += ", done"
        elif self.total and self.n:
            text += f", about {format_duration(elapsed * (self.total - self.n) / self.n)} left"
        print(text, file=self.stream, flush=True)

    def close(self, finished=True):
        """End the report (a final line in ``lines`` mode when the work finished)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and finished and time.monotonic() - self.start >= self.every:
            self._line(final=True)


def progress(iterable=None, total=None, desc="", unit="it", enabled=None, every=30.0):
    """A :class:`Progress` over ``iterable`` (or of ``total`` units, used with ``update``).

    ``enabled``: None (default) follows ``DEEPYEAST_PROGRESS``/the terminal; False silences it;
    True shows it even where ``DEEPYEAST_PROGRESS=off`` is not set explicitly.
    """
    return Progress(iterable, total, desc, unit, enabled, every)
