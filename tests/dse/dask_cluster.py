"""A real Dask cluster on 127.0.0.1 for tests: one scheduler and N single-threaded workers.

Processes are started with the ``dask`` command of this interpreter's environment, exactly as a
user starts them (see docs/scale-out.md), and are always stopped, even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DASK = str(Path(sys.executable).with_name("dask"))
STARTUP_TIMEOUT_S = 60.0
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}
"""As docs/scale-out.md starts workers: one BLAS thread, and no statistical profiler (it costs
the measuring jobs 10-15 %)."""


class Cluster:
    """``with Cluster(tmp, workers=2) as c: c.address``; ``c.kill_worker(0)`` SIGKILLs one worker."""

    def __init__(self, root: Path, workers: int = 2) -> None:
        self.root = root
        self.n_workers = workers
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def __enter__(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        file = self.root / "scheduler.json"
        log = (self.root / "scheduler.log").open("wb")
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
             "--scheduler-file", str(file)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not file.exists() or not file.read_text().strip():
            self._check_alive(deadline)
        self.address = json.loads(file.read_text())["address"]
        for i in range(self.n_workers):
            wlog = (self.root / f"worker{i}.log").open("wb")
            # --no-nanny: a killed worker stays dead, as a lost machine would.
            self.workers.append(subprocess.Popen(
                [DASK, "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--name", f"w{i}"], stdout=wlog, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **WORKER_ENV}))
        self.wait_for_workers(self.n_workers, deadline)

    def _check_alive(self, deadline: float) -> None:
        for p in [self.scheduler, *self.workers]:
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"a Dask process exited early; see {self.root}/*.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Dask cluster did not start in {STARTUP_TIMEOUT_S} s; see {self.root}/*.log")
        time.sleep(0.1)

    def wait_for_workers(self, n: int, deadline: float) -> None:
        from distributed import Client

        with Client(self.address, timeout=STARTUP_TIMEOUT_S) as client:
            while len(client.scheduler_info()["workers"]) < n:
                self._check_alive(deadline)

    def kill_worker(self, i: int) -> None:
        self.workers[i].send_signal(signal.SIGKILL)
        self.workers[i].wait()

    def stop(self) -> None:
        for p in [*self.workers, self.scheduler]:
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in [*self.workers, self.scheduler]:
            if p is None:
                continue
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
