"""Independent tasks on a ``dask.distributed`` cluster, or in this process.

The random-forest grid (one task per (mtry, nodesize) forest), the quality
filter's cross-validation (one task per grid point and fold) and the
CellProfiler features (one task per chunk of cells) are lists of independent
tasks.  :class:`TaskRunner` runs them where ``--scheduler`` says:

``none``
    here, one after the other, without Dask;
``local`` (the default)
    a ``LocalCluster`` of ``--jobs`` worker processes with one thread each,
    started for the run and stopped after it;
``tcp://HOST:PORT``
    a running cluster (``dask scheduler`` + ``dask worker`` processes, or
    dask-jobqueue); also taken from the environment variable ``DASK_SCHEDULER``
    when ``--scheduler`` is not given.

The task functions are deterministic given their inputs (every forest has its
own seed), so the results do not depend on the scheduler, the number of
workers or the order in which tasks finish.  Inputs every task needs (the
feature matrices) are sent to the cluster once with :meth:`TaskRunner.share`
(``Client.scatter``): a worker fetches them on its first task and keeps them,
instead of receiving them with every task.

Workers need the same software as the client (this package, R with
randomForest and rpy2 for the forests); they do not need the client's files:
what a task reads is sent to it.  Start workers with one thread each
(``dask worker ADDRESS --nthreads 1 --nworkers N``): R is single-threaded, and
R calls inside one worker process are serialised.
"""

import logging
import os
import re
import uuid

from deepyeast.utils.io import InputError

SCHEDULER_ENV = "DASK_SCHEDULER"
"""Environment variable naming a running scheduler (used when ``--scheduler`` is not given)."""

SCHEDULERS = ("none", "local")
_ADDRESS_RE = re.compile(r"^(tcp|tls|ucx|inproc)://\S+$")


def check_scheduler(value):
    """``value`` stripped if it is ``"none"``, ``"local"`` or a scheduler address
    (``tcp://HOST:PORT``, ``tls://``, ``ucx://``, ``inproc://``); else ValueError saying what is allowed."""
    value = value.strip()
    if value in SCHEDULERS or _ADDRESS_RE.match(value):
        return value
    raise ValueError(f"{value!r} is neither 'none', 'local' nor a scheduler address such as tcp://HOST:8786")


_PRE_SPAWN = "distributed.nanny.pre-spawn-environ"
"""Dask's settings of the environment its nanny gives each worker process."""


def resolve_scheduler(value=None, environ=None):
    """``--scheduler`` value (or ``$DASK_SCHEDULER``, or ``"local"``) -> a checked scheduler string.

    Returns ``"none"``, ``"local"`` or an address such as ``"tcp://10.0.0.5:8786"``;
    anything else is an :class:`InputError` naming where it came from.
    """
    environ = os.environ if environ is None else environ
    source = "--scheduler"
    if not value:
        value, source = environ.get(SCHEDULER_ENV, ""), SCHEDULER_ENV
    if not value:
        return "local"
    try:
        return check_scheduler(value)
    except ValueError as err:
        raise InputError(f"{source}: {err}") from None


_HANDSHAKE_MAX = 1 << 20
"""Bytes a Dask scheduler's first message (its handshake: versions, compression) stays far below."""


def check_dask_answers(address, timeout):
    """InputError unless the service at ``address`` (``tcp://HOST:PORT``) answers like a Dask scheduler
    within ``timeout`` seconds.

    A Dask peer sends its handshake as soon as a connection is accepted: an 8-byte length, then the
    message.  Dask's own client waits for it without a time limit, so a listener that accepts and never
    answers would hang the step, and a service that answers otherwise (SSH, HTTP) would have its bytes
    read as a length (exabytes asked of the allocator).  Other addresses (tls://, ucx://, inproc://) and a
    host that cannot be reached are left to Dask (which retries until its own timeout).
    """
    import socket
    import struct

    if not address.startswith("tcp://"):
        return
    host, _, port = address[len("tcp://"):].rstrip("/").rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port)
    except ValueError:
        raise InputError(f"--scheduler {address}: no port number (tcp://HOST:PORT)") from None
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return  # refused, unknown host, unreachable: Dask's retries and message
    with conn:
        conn.settimeout(timeout)
        header = b""
        try:
            while len(header) < 8:
                chunk = conn.recv(8 - len(header))
                if not chunk:
                    raise InputError(f"--scheduler {address}: the service there closed the connection without the "
                                     "handshake a Dask scheduler sends; is it a Dask scheduler?")
                header += chunk
        except (socket.timeout, TimeoutError):
            raise InputError(f"--scheduler {address}: a service there accepted the connection but sent no Dask "
                             f"handshake within {timeout:g} s; is it a Dask scheduler (dask scheduler prints its "
                             "address)?") from None
        except OSError as err:
            raise InputError(f"--scheduler {address}: the connection failed during the Dask handshake "
                             f"({err.strerror or err})") from None
    (size,) = struct.unpack("<Q", header)
    if not 0 < size <= _HANDSHAKE_MAX:
        raise InputError(f"--scheduler {address}: the service there does not speak Dask's protocol (its first "
                         f"bytes {header!r} are no Dask handshake); is it a Dask scheduler?")


class TaskRunner:
    """Run ``fn(item, shared)`` for many items, on Dask or in this process.

    Use as a context manager::

        with TaskRunner("local", jobs=2, worker_setup=init) as run:
            data = run.share({"x": x})
            for i, result in run.as_completed(task, items, data):
                ...

    scheduler: a value of :func:`resolve_scheduler`.  jobs: worker processes of a
    LocalCluster.  worker_setup: a module-level function called once on every
    worker present at the start (in its main thread; e.g. starting R), and here for
    ``"none"``.  timeout: seconds to wait for a remote scheduler and its first worker.
    """

    def __init__(self, scheduler="local", jobs=1, worker_setup=None, timeout=60, log=None):
        self.scheduler = resolve_scheduler(scheduler)
        self.jobs = max(1, int(jobs))
        self.worker_setup = worker_setup
        self.timeout = timeout
        self.log = log or (lambda *_: None)
        self.client = None
        self._cluster = None
        self.n_workers = 1

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self):
        if self.scheduler == "none":
            if self.worker_setup:
                self.worker_setup()
            return self
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - dask is in requirements.txt
            raise RuntimeError(f"--scheduler {self.scheduler} needs dask[distributed] ({exc}); "
                               "use --scheduler none to run without it") from exc
        try:
            if self.scheduler == "local":
                import dask

                # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers: glibc then returns
                # freed memory to the system at every turn, and the CellProfiler features ran at half
                # speed (sys time x7); glibc's own (dynamic) threshold is kept instead.
                with dask.config.set({f"{_PRE_SPAWN}.MALLOC_TRIM_THRESHOLD_": None}):
                    self._cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True,
                                                 dashboard_address=None, silence_logs=logging.ERROR)
                self.client = Client(self._cluster)
                self.client.wait_for_workers(self.jobs, timeout=self.timeout)
            else:
                check_dask_answers(self.scheduler, self.timeout)
                try:
                    self.client = Client(self.scheduler, timeout=self.timeout)
                except OSError as exc:
                    raise InputError(f"--scheduler {self.scheduler}: cannot reach the Dask scheduler ({exc})") from None
                try:
                    self.client.wait_for_workers(1, timeout=self.timeout)
                except TimeoutError:
                    raise InputError(f"--scheduler {self.scheduler}: no worker joined within {self.timeout} s "
                                     "(start some with `dask worker ADDRESS --nthreads 1`)") from None
            self.n_workers = max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))
            if self.worker_setup:
                self.client.run(self.worker_setup)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.log(f"dask: {self.n_workers} worker(s) at {self.client.scheduler.address}"
                 f"{' (LocalCluster)' if self._cluster else ''}")
        return self

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        return False

    # ------------------------------------------------------------------ tasks
    def share(self, data):
        """Make ``data`` (any picklable object) available to every task; pass the result as ``shared``.

        On Dask it is scattered once (a worker fetches it with its first task and keeps it);
        here it is returned as it is.
        """
        if self.client is None:
            return data
        return self.client.scatter(data, hash=False)

    def as_completed(self, fn, items, shared=None, window=None):
        """Yield ``(index, fn(item, shared))`` for every item, in the order the tasks finish.

        ``items`` may be a generator: it is consumed as tasks are submitted.

        ``fn`` must be a module-level function (workers import it by name).  At most
        ``window`` tasks are submitted at a time (default: all), which bounds the
        memory held by task arguments and results.  A task's exception is raised here
        as it is (e.g. an InputError naming the bad file); the remaining tasks are
        cancelled.
        """
        if self.client is None:
            for i, item in enumerate(items):
                yield i, fn(item, shared)
            return
        from dask.distributed import as_completed

        tag = f"{getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex[:12]}"
        window = float("inf") if window is None else max(1, int(window))
        pending = iter(enumerate(items))
        live = {}
        done = as_completed()

        def submit_next():
            for i, item in pending:
                fut = self.client.submit(fn, item, shared, key=f"{tag}-{i}", pure=False)
                live[fut.key] = (i, fut)
                done.add(fut)
                return True
            return False

        while len(live) < window and submit_next():
            pass
        try:
            for fut in done:
                i, _ = live.pop(fut.key)
                try:
                    result = fut.result()
                except Exception as exc:
                    if type(exc).__name__ == "KilledWorker":
                        raise RuntimeError(f"a Dask worker died running task {i} of {fn.__name__} "
                                           "(out of memory?)") from None
                    raise
                fut.release()
                yield i, result
                submit_next()
        finally:
            if live:
                self.client.cancel([f for _, f in live.values()])

    def imap(self, fn, items, shared=None, window=None):
        """Like :meth:`as_completed` but yields ``fn(item, shared)`` in item order."""
        buffered, nxt = {}, 0
        for i, result in self.as_completed(fn, items, shared, window):
            buffered[i] = result
            while nxt in buffered:
                yield buffered.pop(nxt)
                nxt += 1

    def default_window(self, per_worker=4):
        """A task window keeping every worker busy: ``per_worker`` tasks per worker."""
        return per_worker * self.n_workers
