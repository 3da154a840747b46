"""The executor seam: the same results, in job order once sorted, from every backend."""

from __future__ import annotations

import operator

import pytest

from dse.executor import open_executor
from quant.errors import DseError

from .dask_cluster import Cluster

JOBS = [(i, i * i) for i in range(12)]


def _run(**kwargs):
    with open_executor(**kwargs) as ex:
        out = dict(ex.map_unordered(operator.add, JOBS))
        return [out[i] for i in range(len(JOBS))], ex.label


def test_in_process_and_local_pool_agree():
    serial, label = _run(jobs=1)
    assert serial == [a + b for a, b in JOBS] and label == "this process"
    pooled, label = _run(jobs=2)
    assert pooled == serial and label == "local, 2 processes"


def test_dask_cluster_agrees(tmp_path):
    with Cluster(tmp_path, workers=2) as cluster:
        results, label = _run(scheduler=cluster.address)
    assert results == [a + b for a, b in JOBS]
    assert label == f"Dask {cluster.address}, 2 workers"


def test_unreachable_scheduler_is_one_line(monkeypatch):
    monkeypatch.setattr("dse.executor.CONNECT_TIMEOUT_S", 1.0)
    with pytest.raises(DseError, match=r"--scheduler tcp://127\.0\.0\.1:9: cannot reach a Dask scheduler"):
        _run(scheduler="tcp://127.0.0.1:9")


@pytest.mark.parametrize("jobs", [0, -1])
def test_jobs_below_one_is_a_user_mistake(jobs):
    with pytest.raises(DseError, match=f"--jobs {jobs}: must be at least 1"):
        _run(jobs=jobs)
