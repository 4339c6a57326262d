"""Independent pieces of one step in worker processes on this machine.

Steps whose tasks go to a Dask cluster use :class:`deepyeast.analysis.cluster.TaskRunner`; this is the
lighter tool for work that stays on the machine (the transfer curves, the t-SNE maps): a few
CPU-bound, single-threaded pieces, each a deterministic function of its arguments, so the results
do not depend on the number of workers.
"""

import concurrent.futures
import contextlib
import multiprocessing
import os


def worker_count(jobs, tasks):
    """Processes for ``tasks`` independent pieces: ``jobs`` (None or -1: every CPU of this machine),
    at most ``tasks``, at least 1."""
    wanted = (os.cpu_count() or 1) if jobs in (None, -1) else max(1, int(jobs))
    return max(1, min(wanted, int(tasks)))


@contextlib.contextmanager
def process_pool(workers):
    """Yield a ``concurrent.futures`` executor of ``workers`` processes, or None when ``workers`` <= 1
    (the caller then runs the pieces here, in order).

    Workers are forked: they inherit what this process has imported and pay no start-up beyond the
    fork.  Start the pool before this process runs threads of its own (a PyTorch forward pass, say):
    a forked child gets none of the parent's threads.
    """
    if workers <= 1:
        yield None
        return
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool
