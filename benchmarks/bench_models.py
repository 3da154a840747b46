"""Time and peak memory of ``dse measure`` on catalog-shaped synthetic models, exact and sampled.

Run: python benchmarks/bench_models.py. Each case runs ``dse.cli.main`` in a fresh Python process,
which reports its wall time and peak RSS (``ru_maxrss``). Exact mode streams one tensor at a
time, so its peak RSS should stay under 2x the largest tensor (float32) + 300 MB (issue 4).
Prints a table; asserts nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys

from rich.console import Console

from dse.render import table
from models.sources import open_source

CHILD = """
import contextlib, io, json, resource, sys, time
from dse.cli import main
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CASES = [  # (weights spec, --sample)
    ("llama-3.1-8b:synthetic", "auto"),
    ("minilm", "off"),
    ("smollm2-135m:synthetic", "off"),
    ("llama-3.2-1b:synthetic", "off"),
]
CANDIDATE = "E2M3sUE4M4"


def run_case(spec: str, sample: str) -> dict[str, float]:
    argv = ["measure", CANDIDATE, "--weights", spec, "--sample", sample, "--json"]
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    out = table(f"dse measure {CANDIDATE}: time and peak RSS (fresh process per case)", [
        "weights", "mode", "time [s]", "peak RSS [MB]", "largest tensor [MB]", "2x largest + 300 [MB]", "within"],
        left=2)
    for spec, sample in CASES:
        largest_mb = max(i.numel for i in open_source(spec).infos()) * 4 / 1e6
        result = run_case(spec, sample)
        limit_mb = 2 * largest_mb + 300
        mode = "sampled" if sample != "off" else "exact"
        within = "-" if mode == "sampled" else ("yes" if result["peak_rss_mb"] <= limit_mb else "NO")
        out.add_row(spec, mode, f"{result['seconds']:.1f}", f"{result['peak_rss_mb']:.0f}", f"{largest_mb:.0f}",
                    f"{limit_mb:.0f}", within)
    Console(width=120).print(out)


if __name__ == "__main__":
    main()
