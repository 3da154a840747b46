"""Whole-run wall time of ``dse explore``: cold (empty cache) and warm (everything cached).

Run: python benchmarks/bench_explore.py. Each scenario is explored twice in a subprocess, into
a fresh output and cache directory: the cold run measures and solves, the warm rerun should
read no weights (the cache trusts content hashes under unchanged fingerprints) and re-solve
nothing. Goals (issue 18, quiet 2-core machine): datacenter cold <= 40 s, warm exact
Llama-3.2-1B <= 2 s.

Prints a table; asserts nothing. Numbers depend on the machine and its load: the line under the
table times bench_quant's ml_dtypes cast reference before and after the runs, so runs on
different days can be compared.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console

from bench_quant import cast_seconds  # the script's own folder is on sys.path
from dse.render import table

ROOT = Path(__file__).resolve().parents[1]
EXACT_1B = {
    "description": "exact Llama-3.2-1B shapes, six standard formats (bench_explore)",
    "model": {"weights": "llama-3.2-1b:synthetic"},
    "candidates": {"names": ["E2M1sE4M3", "E2M1sUE8M0@32", "E2M3sUE8M0@32", "E2M3sUE4M4", "E4M3sUE8M0@32",
                             "E4M3sUE8M0@layer"]},
    "hardware": {"preset": "lpddr5x"},
    "budgets": {"bpw": [9.0]},
}
RUNS = [("datacenter.yaml (sampled 8B, 9 formats)", ROOT / "scenarios" / "datacenter.yaml", 40.0),
        ("exact llama-3.2-1b:synthetic, 6 formats", None, None)]
WARM_GOAL_1B_S = 2.0


def timed_explore(scenario: Path, out: Path) -> list[str]:
    """Wall and CPU (the child and its workers) seconds of one ``dse explore``, formatted; the
    error line instead when the run fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "dse", "explore", str(scenario), "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode:
        return [f"failed (exit {run.returncode})", run.stderr.strip().splitlines()[-1][:60]]
    return [f"{wall:.1f}", f"{(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime):.1f}"]


def main() -> None:
    out = table("dse explore, cold then warm (fresh cache per scenario)",
                ["scenario", "cold wall [s]", "cold CPU [s]", "warm wall [s]", "warm CPU [s]", "goal"])
    w = np.random.default_rng(0).standard_normal(1 << 24, dtype=np.float32)
    before = cast_seconds(w)
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, cold_goal in RUNS:
            root = Path(tmp) / str(len(out.rows))
            root.mkdir()
            scenario = root / "s.yaml"
            doc = yaml.safe_load(path.read_text()) if path else dict(EXACT_1B)
            doc["output"] = {**doc.get("output", {}), "dir": str(root / "out"), "cache_dir": str(root / "cache")}
            scenario.write_text(yaml.safe_dump(doc))
            cold = timed_explore(scenario, root / "out")
            warm = timed_explore(scenario, root / "out")
            goal = f"cold <= {cold_goal:.0f} s" if cold_goal else f"warm <= {WARM_GOAL_1B_S:.0f} s"
            out.add_row(label, *cold, *warm, goal)
    after = cast_seconds(w)
    console = Console(width=120)
    console.print(out)
    console.print(f"machine speed: ml_dtypes float32->E4M3->float32 cast of 16M weights, 1 thread: "
                  f"{before * 1e3:.0f} ms before, {after * 1e3:.0f} ms after (187 ms on a quiet day here)")


if __name__ == "__main__":
    main()
