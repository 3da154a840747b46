"""Warm runs read nothing: cached content hashes are trusted under an unchanged fingerprint, and
any change to the weights (file rewritten, other seed) is measured again, never served stale."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from dse.executor import InProcess
from dse.measurement import measure_table, open_source_cached
from dse.scenario import scenario_from_dict
from dse.setup import setup
from models.sources import open_source

CANDIDATES = ["E2M1sUE8M0@32", "INT4sE4M3"]


class CountingExecutor(InProcess):
    """In-process executor that records every job it runs."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, ...]] = []

    def map_unordered(self, fn, jobs):  # type: ignore[no-untyped-def]
        self.jobs += list(jobs)
        return super().map_unordered(fn, jobs)


def measured(tmp_path: Path, weights: str, while_measuring: Callable[[], None] | None = None,
             **extra: Any) -> tuple[pd.DataFrame, int]:
    doc = {"model": {"weights": weights, **extra}, "candidates": {"names": CANDIDATES},
           "hardware": {"preset": "lpddr5x"}, "budgets": {"bpw": [6.0]},
           "output": {"cache_dir": str(tmp_path / "cache")}}
    s = scenario_from_dict(doc, tmp_path / "s.yaml")
    executor = CountingExecutor()
    table = measure_table(s, setup(s), executor, while_measuring=while_measuring)
    return table, len(executor.jobs)


def write_weights(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    save_file({"a.weight": rng.standard_normal((32, 64)).astype(np.float32),
               "b.weight": rng.standard_normal((16, 64)).astype(np.float32)}, str(path))


def test_a_warm_exact_run_submits_no_job_and_gives_the_same_table(tmp_path):
    cold, cold_jobs = measured(tmp_path, "llama-3.2-1b:synthetic", include="layers\\.0\\.self_attn")
    warm, warm_jobs = measured(tmp_path, "llama-3.2-1b:synthetic", include="layers\\.0\\.self_attn")
    assert cold_jobs == cold["tensor"].nunique() == 4
    assert warm_jobs == 0
    pd.testing.assert_frame_equal(cold, warm)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_work_while_measuring_runs_once_beside_jobs_and_never_on_a_warm_run(tmp_path):
    """The pipeline's background imports: started with the first job, done before the table is
    returned, skipped when nothing is measured; a failure there changes nothing."""
    calls: list[str] = []

    def work() -> None:
        time.sleep(0.2)  # still running when the last job ends: the join must wait for it
        calls.append(threading.current_thread().name)
        raise ImportError("a broken optional install")

    cold, _ = measured(tmp_path, "llama-3.2-1b:synthetic", work, include="layers\\.0\\.self_attn")
    assert len(calls) == 1 and calls[0] != threading.current_thread().name
    warm, warm_jobs = measured(tmp_path, "llama-3.2-1b:synthetic", work, include="layers\\.0\\.self_attn")
    assert warm_jobs == 0 and len(calls) == 1
    pd.testing.assert_frame_equal(cold, warm)


def test_a_rewritten_file_is_measured_again_not_served_stale(tmp_path):
    path = tmp_path / "w.safetensors"
    write_weights(path, seed=0)
    first, _ = measured(tmp_path, str(path))
    warm, jobs = measured(tmp_path, str(path))
    assert jobs == 0
    write_weights(path, seed=1)  # same name, same shapes, new values (and a new stamp)
    second, jobs = measured(tmp_path, str(path))
    assert jobs > 0
    assert not np.allclose(first["error"], second["error"])
    fresh, _ = measured(tmp_path / "fresh", str(path))  # a cold cache agrees with the re-measure
    pd.testing.assert_frame_equal(second, fresh)


def test_a_touched_file_with_the_same_values_is_verified_not_remeasured(tmp_path):
    path = tmp_path / "w.safetensors"
    write_weights(path, seed=0)
    first, _ = measured(tmp_path, str(path))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again, jobs = measured(tmp_path, str(path))
    assert jobs == 2  # one hash check per tensor, no candidate measured
    pd.testing.assert_frame_equal(first, again)
    _, jobs = measured(tmp_path, str(path))
    assert jobs == 0  # the new stamp is trusted from now on


def test_sampled_entries_follow_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    write_weights(path, seed=0)
    first, _ = measured(tmp_path, str(path), sample_fraction=0.5)
    write_weights(path, seed=1)
    second, jobs = measured(tmp_path, str(path), sample_fraction=0.5)
    assert jobs > 0
    assert not np.allclose(first["error"], second["error"])


def test_fingerprints_stamp_the_file_as_opened(tmp_path):
    path = tmp_path / "w.safetensors"
    write_weights(path, seed=0)
    source = open_source(str(path))
    before = source.fingerprint("a.weight")
    assert before == open_source(str(path)).fingerprint("a.weight") != source.fingerprint("b.weight")
    write_weights(path, seed=1)
    assert source.fingerprint("a.weight") == before  # what this reader read
    assert open_source(str(path)).fingerprint("a.weight") != before
    synthetic = open_source("llama-3.2-1b:synthetic")
    name = synthetic.infos()[0].name
    assert synthetic.fingerprint(name) == open_source("llama-3.2-1b:synthetic").fingerprint(name)
    assert synthetic.fingerprint(name) != open_source("llama-3.2-1b:synthetic", seed=1).fingerprint(name)


def test_a_worker_reopens_a_source_whose_file_changed(tmp_path):
    """Every job of a long-lived worker (explore, dse measure, dse quantize) reads what is on disk."""
    path = tmp_path / "w.safetensors"
    write_weights(path, seed=0)
    first = open_source_cached(str(path))
    assert open_source_cached(str(path)) is first  # unchanged: the header is parsed once
    old = first.load("a.weight")
    write_weights(path, seed=1)
    assert first.changed()
    again = open_source_cached(str(path))
    assert again is not first and not again.changed()
    np.testing.assert_array_equal(again.load("a.weight"), open_source(str(path)).load("a.weight"))
    assert not np.array_equal(again.load("a.weight"), old)
    path.unlink()
    assert again.changed()  # a removed file is a change too
    assert not open_source("llama-3.2-1b:synthetic").changed()
