"""medsam-segment --batch --cluster ADDRESS: the cases as tasks on Dask distributed.

ADDRESS is a running scheduler (``tcp://host:8786``; its workers need medsam-gui installed and
the scans and output folders at the same paths), or ``local:N`` for a local cluster of N worker
processes (the tests use it). Each worker process keeps its model between tasks (see
``batch.worker_backend``). A worker that dies while it holds a case: the scheduler runs the case
again on another worker; on the local cluster once (``allowed-failures`` 1, as the local pool
does), on a real cluster as often as its scheduler allows. Then the case is reported as failed.
Needs the ``cluster`` extra.
"""

from __future__ import annotations

import contextlib
import os
from typing import Sequence, Tuple

from medsam_gui.engine.batch import Case, Done, Outcome, describe_error, run_case
from medsam_gui.errors import MedsamError


@contextlib.contextmanager
def _environ_kept():
    """This process's environment as it was before the block. Dask's local cluster sets
    OMP_NUM_THREADS=1 (and MKL's, OpenBLAS's) in the parent for its workers and leaves them
    there, so every later child of the parent ran on one thread (a medsam-segment started by
    the test run afterwards compiled its runtime for 1 thread and drew different bf16 masks)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def _client(address: str):
    """(client, local cluster or None, threads per worker or None, where)."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise MedsamError("--cluster needs Dask distributed: pip install "
                          "'medsam-gui[cluster]'") from None
    if address.startswith("local:"):
        try:
            n = int(address.split(":", 1)[1])
        except ValueError:
            raise MedsamError(f"--cluster {address}: local:N needs a number of workers") \
                from None
        if n < 1:
            raise MedsamError(f"--cluster {address}: local:N needs at least 1 worker")
        threads = max(1, (os.cpu_count() or 1) // n)
        with dask.config.set({"distributed.scheduler.allowed-failures": 1}), _environ_kept():
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        return Client(cluster), cluster, threads, f"a local Dask cluster ({n} processes)"
    try:
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise MedsamError(f"cannot reach the Dask scheduler at {address} ({exc})") from None
    return client, None, None, f"the Dask cluster at {address}"  # threads: the workers' own


def _failure(exc: BaseException) -> str:
    if type(exc).__name__ == "KilledWorker":
        return "the worker process died on this case each time it ran (Dask KilledWorker)"
    return describe_error(exc)


def run_dask(todo: Sequence[Case], case_args: Sequence[str], address: str,
             done: Done) -> Tuple[int, str]:
    """Run ``todo`` on the cluster; (its number of workers, where it ran)."""
    from distributed import as_completed

    client, cluster, threads, where = _client(address)
    try:
        workers = len(client.scheduler_info().get("workers", {})) or 1
        futures = client.map(run_case, list(todo), case_args=list(case_args),
                             threads=threads, pure=False)
        by_key = {f.key: c for f, c in zip(futures, todo)}
        for f in as_completed(futures):
            try:
                done(f.result())
            except Exception as exc:  # the worker died, or the task could not be sent
                case = by_key[f.key]
                done(Outcome(case.n, case.out, "failed", _failure(exc)))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return workers, where
