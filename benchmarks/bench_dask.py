"""Dask against the local process pool, and a sizing table for clusters.

Run: python benchmarks/bench_dask.py [--repeat N] [--sizing-only]. Needs the `dask` extra (distributed).

1. Exact ``llama-3.2-1b:synthetic`` with six standard formats, explored from a cold cache by the
   local process pool (``--jobs 1`` and ``2``) and by a real Dask cluster on 127.0.0.1 with one
   and with two single-threaded workers; ``--repeat N`` runs each N times, interleaved. The
   overhead ratio divides Dask's median wall time by the local pool's at the same number of
   processes (goal <= 1.10). Output files are compared too.
2. A sizing table: CPU-seconds per weight of each format measured on one core (one
   4096 x 4096 synthetic tensor), times each catalog model's weights, gives the exact
   measurement's CPU time; the wall time on W workers is the longest-processing-time schedule of
   its per-tensor jobs (a job is one tensor with all formats).

Prints tables; asserts nothing. Numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import filecmp
import heapq
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console

from dse.commands.args import positive_int
from dse.render import table
from models.catalog import get_model
from models.synthetic import synthetic_matrix
from quant import measure, parse_candidate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.dse.dask_cluster import Cluster  # noqa: E402  (the same cluster the tests start)

CANDIDATES = ["E2M1sE4M3", "E2M1sUE8M0@32", "E2M3sUE8M0@32", "E2M3sUE4M4", "E4M3sUE8M0@32", "E4M3sUE8M0@layer"]
"""NVFP4-like, MXFP4, MXFP6, SOP FP6, MXFP8 and per-layer FP8."""
SCENARIO = {
    "description": "exact Llama-3.2-1B shapes, six standard formats (bench_dask)",
    "model": {"weights": "llama-3.2-1b:synthetic"},
    "candidates": {"names": CANDIDATES},
    "hardware": {"preset": "lpddr5x"},
    # One budget above every format: the run times measurement, not the solver (issue 12 covers
    # budgets the solver cannot certify at this size).
    "budgets": {"bpw": [9.0]},
}
MODELS = ["llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "deepseek-v3"]
WORKERS = [8, 64, 512]


def explore(root: Path, *extra: str) -> float:
    """Wall time of one cold ``dse explore`` of ``root/../s.yaml`` (its own cache) writing ``root/out``."""
    path = root.parent / "s.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(SCENARIO))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dse", "explore", str(path), "--out", str(root / "out"), *extra],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors


def executor_table(console: Console, repeat: int) -> None:
    """Each executor ``repeat`` times, the executors interleaved (round after round), so that a
    drift in the machine's speed lands on all of them alike; the median of each is compared."""
    configs = [("local", 1), ("local", 2), ("dask", 1), ("dask", 2)]
    walls: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    same = {n: True for n in (1, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeat):
            for kind, n in configs:
                root = Path(tmp) / f"{kind}{n}-{r}"
                if kind == "local":
                    walls[kind, n].append(explore(root, "--jobs", str(n)))
                    continue
                with Cluster(root / "cluster", workers=n) as cluster:
                    walls[kind, n].append(explore(root, "--scheduler", cluster.address))
                same[n] &= same_files(Path(tmp) / f"local2-{r}" / "out", root / "out")
    out = table(f"exact llama-3.2-1b:synthetic, 6 formats, cold cache, {repeat} interleaved run(s) each",
                ["executor", "wall, median [s]", "wall, all runs [s]", "vs local [ratio]", "files identical"])
    for kind, n in configs:
        median = float(np.median(walls[kind, n]))
        ratio = median / float(np.median(walls["local", n]))
        label = f"local pool, {n} process{'es' if n > 1 else ''}" if kind == "local" else \
            f"Dask, {n} worker{'s' if n > 1 else ''}"
        out.add_row(label, f"{median:.1f}", ", ".join(f"{w:.1f}" for w in walls[kind, n]), f"{ratio:.2f}",
                    "yes" if kind == "local" or same[n] else "NO")
    console.print(out)


def cpu_s_per_weight() -> dict[str, float]:
    """Single-core measuring cost of each format, seconds per weight."""
    source = synthetic_matrix("llm-like", (4096, 4096), 0)
    w = source.load(source.infos()[0].name)
    out = {}
    for name in CANDIDATES:
        c = parse_candidate(name)
        measure(w, c, threads=1)  # warm the format's tables
        start = time.process_time()
        measure(w, c, threads=1)
        out[name] = (time.process_time() - start) / w.size
    return out


def lpt_makespan(jobs: list[float], workers: int) -> float:
    """Longest-processing-time-first schedule: what Dask's queue achieves at best."""
    loads = [0.0] * min(workers, len(jobs))
    heapq.heapify(loads)
    for job in sorted(jobs, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + job)
    return max(loads)


def sizing_table(console: Console) -> None:
    per_weight = sum(cpu_s_per_weight().values())
    rows = []
    for model_id in MODELS:
        spec = get_model(model_id)
        numel = [t.out_features * t.in_features for t in spec.tensors for _ in range(t.count)]
        jobs = [n * per_weight for n in numel]
        total = sum(jobs)
        rows.append([model_id, f"{len(jobs):,}", f"{sum(numel) / 1e9:.1f}", f"{2 * max(numel) / 1e6:.0f}",
                     f"{total / 3600:.2f}", *(f"{lpt_makespan(jobs, w) / 60:.1f}" for w in WORKERS)])
    out = table(f"exact measurement, 6 formats ({per_weight * 1e9:.1f} CPU-ns per weight, 1 core)",
                ["model", "tensors", "weights [G]", "largest job read [MB, BF16]", "CPU [h]",
                 *(f"{w} workers [min]" for w in WORKERS)])
    for row in rows:
        out.add_row(*row)
    console.print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizing-only", action="store_true", help="skip the cluster runs")
    parser.add_argument("--repeat", type=positive_int, default=1, help="runs of each executor, interleaved (median shown)")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    console = Console(width=120)
    if not args.sizing_only:
        executor_table(console, args.repeat)
    sizing_table(console)


if __name__ == "__main__":
    main()
