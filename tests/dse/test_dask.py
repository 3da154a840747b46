"""dse explore on a real Dask cluster (scheduler + workers on 127.0.0.1): the same files as a
local run, also when a worker is killed mid-run; one-line errors for unreachable clusters and
weights that workers cannot read.

CI starts a cluster and exports its address as DSE_TEST_SCHEDULER; without it the tests start
their own. The worker-kill test always starts its own (it kills one of them).
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dse.cli import main
from tests.dse.test_explore import needs_minilm

from .dask_cluster import Cluster

pytestmark = needs_minilm

SCENARIO = {
    "model": {"weights": "minilm", "include": r"encoder\.layer\.[0-2]\."},
    "candidates": {"names": ["E2M1sE4M3", "NF4sUE4M4", "NF4|DD4sUE4M4", "E2M3sUE4M4", "E4M3sUE8M0@32"]},
    "hardware": {"preset": "lpddr5x"},
    "budgets": {"bpw": [4.6, 5.5, 6.5]},
}


@contextlib.contextmanager
def cluster_address(tmp_path: Path):
    address = os.environ.get("DSE_TEST_SCHEDULER")
    if address:
        yield address
        return
    with Cluster(tmp_path / "cluster", workers=2) as cluster:
        yield cluster.address


def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(SCENARIO))
    return path


def explore_into(root: Path, *extra: str) -> Path:
    """A cold explore of one scenario file (its own cache, in ``root``) writing ``root/out``."""
    assert main(["explore", str(scenario_file(root.parent)), "--out", str(root / "out"), *extra]) == 0
    return root / "out"


def assert_same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors and match == names


def test_explore_on_dask_writes_the_local_files(tmp_path):
    local = explore_into(tmp_path / "local", "--jobs", "2")
    with cluster_address(tmp_path) as address:
        remote = explore_into(tmp_path / "dask", "--scheduler", address)
    assert_same_files(local, remote)


def test_a_killed_worker_costs_only_its_jobs(tmp_path):
    local = explore_into(tmp_path / "local", "--jobs", "2")
    root = tmp_path / "dask"
    with Cluster(tmp_path / "cluster", workers=2) as cluster:
        run = subprocess.Popen([sys.executable, "-m", "dse", "explore", str(scenario_file(tmp_path)), "--out",
                                str(root / "out"), "--scheduler", cluster.address],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cache = root / ".dse-cache"
        deadline = time.monotonic() + 300
        while not any(cache.glob("??/*.json")) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the first results are in: the workers are busy
        assert run.poll() is None, "the run ended before a worker could be killed"
        cluster.kill_worker(0)
        _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err.decode()
    assert_same_files(local, root / "out")


def test_unreachable_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("dse.executor.CONNECT_TIMEOUT_S", 1.0)
    assert main(["explore", str(scenario_file(tmp_path)), "--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tcp://127.0.0.1:9: cannot reach a Dask scheduler" in err[0]
    assert not (tmp_path / "out").exists()


def test_weights_a_worker_cannot_read_are_named(tmp_path):
    import dse
    from models.sources import open_source
    from safetensors.numpy import save_file

    minilm = open_source("minilm")
    name = minilm.infos()[3].name
    weights = tmp_path / "w.safetensors"
    save_file({name: minilm.load(name)}, str(weights))
    scenario = dse.scenario_from_dict(dict(SCENARIO, model={"weights": str(weights)}), tmp_path / "s.yaml")
    moved = tmp_path / "elsewhere.safetensors"
    with cluster_address(tmp_path) as address, pytest.raises(dse.DseError, match=str(weights)) as err:
        # setup (on this machine) reads the header; then the file disappears before the workers look
        dse.explore(scenario, scheduler=address, on_start=lambda n: weights.rename(moved))
    assert "\n" not in str(err.value)


def test_quantize_on_dask_writes_the_local_package(tmp_path):
    out = explore_into(tmp_path / "local", "--jobs", "2")
    config = sorted(out.glob("config-*.yaml"))[0]
    assert main(["quantize", str(config), "--out", str(tmp_path / "pkg-local")]) == 0
    with cluster_address(tmp_path) as address:
        assert main(["quantize", str(config), "--out", str(tmp_path / "pkg-dask"), "--scheduler", address]) == 0
    assert_same_files(tmp_path / "pkg-local", tmp_path / "pkg-dask")
    assert main(["verify", str(tmp_path / "pkg-dask")]) == 0


def test_measure_on_dask_prints_the_local_records(tmp_path, capsys):
    argv = ["measure", "E2M1sE4M3", "NF4|DD4sUE4M4", "--weights", "minilm", "--json"]
    assert main([*argv, "--threads", "1"]) == 0
    local = capsys.readouterr().out
    with cluster_address(tmp_path) as address:
        assert main([*argv, "--scheduler", address]) == 0
    assert capsys.readouterr().out == local
