"""Where independent jobs run: in this process, a local process pool, or a Dask cluster.

Measurement, sensitivity and packing are maps over independent per-tensor jobs. They submit
them through one seam, :func:`open_executor`, and consume results as they complete. Callers
must make their output independent of completion order (sort by job index), which is what
makes a cluster run byte-identical to a local one.

The Dask backend is ``dask.distributed`` (https://distributed.dask.org): a scheduler address
(``tcp://host:8786``) connects to a running cluster, ``local`` starts a ``LocalCluster`` on this
machine (with Dask's dashboard). Jobs carry only names and small arrays; each worker opens the
weights itself, and results travel straight back to the client, which alone writes files.
A worker that dies mid-run costs only its jobs: the scheduler reruns them elsewhere.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Protocol

from quant.errors import DseError

CONNECT_TIMEOUT_S = 10.0
"""How long to wait for a Dask scheduler before saying it cannot be reached."""


class Executor(Protocol):
    """Runs ``fn(*args)`` jobs and yields ``(index, result)`` pairs in completion order."""

    workers: int
    """How many jobs run at once (shown in progress bars)."""
    label: str
    """Where the jobs run, e.g. 'local, 2 processes' or 'Dask tcp://10.0.0.5:8786, 8 workers'."""

    def map_unordered(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        ...


class InProcess:
    """Runs jobs one after another in this process (``jobs=1``: easiest to debug and profile)."""

    workers = 1
    label = "this process"

    def map_unordered(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(jobs):
            yield i, fn(*args)


def _worker_init(parent: int) -> None:
    """Pool worker setup: die with the parent, even on SIGKILL (Linux PR_SET_PDEATHSIG); leave
    Ctrl-C to the parent; let SIGTERM kill (the parent's handler turns it into an exception)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: workers still end when the parent closes the pool
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class LocalPool:
    """A process pool on this machine (processes, not threads: the quantizer holds the GIL)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.label = f"local, {workers} processes"
        self._pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(os.getpid(),))

    def map_unordered(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        index: dict[Future[Any], int] = {self._pool.submit(fn, *args): i for i, args in enumerate(jobs)}
        try:
            # as_completed, not a loop of wait(FIRST_COMPLETED): that rescans every pending
            # future per completion, quadratic in the jobs (DeepSeek-V3's 45,092 tensors).
            for future in as_completed(index):
                yield index[future], future.result()
        except BaseException:  # Ctrl-C, SIGTERM, an error: stop the workers now, not after their job
            self._terminate()
            raise

    def _terminate(self) -> None:
        workers = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskCluster:
    """Jobs on a Dask cluster through a ``distributed.Client``."""

    def __init__(self, client: Any, address: str, cluster: Any = None) -> None:
        self._client = client
        self._cluster = cluster
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.label = f"Dask {address}, {self.workers} worker{'s' if self.workers != 1 else ''}"

    def map_unordered(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        # pure=False: identical arguments must still run (a rerun after an edit of the weights).
        futures = [self._client.submit(fn, *args, pure=False) for args in jobs]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for future in as_completed(futures):
                yield index[future.key], future.result()
        finally:
            self._client.cancel(futures)

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


@contextmanager
def open_executor(scheduler: str | None = None, jobs: int | None = None) -> Iterator[Executor]:
    """The executor for a run, closed on exit.

    Args:
        scheduler: None for this machine's process pool; ``"local"`` for a Dask ``LocalCluster``
            of ``jobs`` single-threaded workers; otherwise a Dask scheduler address such as
            ``tcp://127.0.0.1:8786``.
        jobs: local processes (default: all cores); ``1`` runs in this process.

    Raises:
        DseError: ``jobs`` below 1, Dask not installed, or the scheduler cannot be reached.
    """
    if jobs is not None and jobs < 1:
        raise DseError(f"--jobs {jobs}: must be at least 1 (or omitted for all cores)")
    if scheduler is None:
        n = jobs or os.cpu_count() or 1
        if n == 1:
            yield InProcess()
            return
        pool = LocalPool(n)
        try:
            yield pool
        finally:
            pool.close()
        return
    dask = _connect(scheduler, jobs)
    try:
        yield dask
    finally:
        dask.close()


def _connect(scheduler: str, jobs: int | None) -> DaskCluster:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DseError("--scheduler needs Dask: pip install 'sop-dse[dask]' (or pip install distributed)") from None
    if scheduler == "local":
        import dask

        # silence_logs: the cluster's own shutdown chatter is not the user's business. The
        # workers' statistical profiler samples the job's stack every 10 ms, which made one layer's
        # measuring jobs 10-15 % slower (docs/scale-out.md); the dashboard's task stream stays.
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            cluster = LocalCluster(n_workers=jobs or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                                   silence_logs=logging.CRITICAL)
        return DaskCluster(Client(cluster), cluster.scheduler_address, cluster)
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as err:
        raise DseError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there "
                       f"({type(err).__name__}); start one with 'dask scheduler' or fix the address") from None
    return DaskCluster(client, scheduler)
