"""A real Dask cluster on 127.0.0.1 for the tests: `dask scheduler` + `dask worker` subprocesses.

Also a payload that counts how often a worker process unpickles it, to check that
data shared with :meth:`TaskRunner.share` reaches a worker once, not with every task.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")


@contextlib.contextmanager
def dask_cluster(n_workers=2, timeout=120):
    """Start ``dask scheduler`` and ``n_workers`` ``dask worker`` processes (1 thread each) on
    127.0.0.1 with random free ports; yield the scheduler address (``tcp://127.0.0.1:PORT``)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, TESTS, os.environ.get("PYTHONPATH", "")]))
    env.pop("DASK_SCHEDULER", None)
    procs = []
    with tempfile.TemporaryDirectory(prefix="dask-test-") as tmp:
        sched_file = os.path.join(tmp, "scheduler.json")
        logs = []

        def start(args, name):
            log = open(os.path.join(tmp, f"{name}.log"), "w")
            logs.append(log)
            p = subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=tmp, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(p)
            return p

        try:
            start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                   "--scheduler-file", sched_file], "scheduler")
            deadline = time.time() + timeout
            while not os.path.exists(sched_file):
                if time.time() > deadline or procs[0].poll() is not None:
                    raise RuntimeError("dask scheduler did not start:\n" + _read(tmp, "scheduler"))
                time.sleep(0.2)
            time.sleep(0.2)
            address = json.load(open(sched_file))["address"]
            for i in range(n_workers):
                start(["worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
                       "--name", f"w{i}"], f"worker{i}")
            from dask.distributed import Client

            with Client(address, timeout=timeout) as c:
                c.wait_for_workers(n_workers, timeout=timeout)
            yield address
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in reversed(procs):
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            for log in logs:
                log.close()


def _read(tmp, name):
    try:
        return open(os.path.join(tmp, f"{name}.log")).read()[-3000:]
    except OSError:
        return ""


_UNPICKLED = 0


class CountingPayload:
    """An array whose unpickling in a process is counted (see :func:`unpickled`)."""

    def __init__(self, data):
        self.data = np.asarray(data)

    def __getstate__(self):
        return self.data

    def __setstate__(self, data):
        global _UNPICKLED
        _UNPICKLED += 1
        self.data = data


def payload_task(i, payload):
    """A task reading the shared payload: (i, worker pid, payload sum)."""
    time.sleep(0.2)
    return i, os.getpid(), float(payload.data.sum())


def unpickled():
    """How often this process unpickled a CountingPayload."""
    return _UNPICKLED
