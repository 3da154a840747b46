"""Throughput, fixed cost and memory of measure() and quantize()+dequantize() on one tensor.

Run: python benchmarks/bench_quant.py [--threads N] [--repeat R] [--elements N]
Prints three tables (never asserts):
1. measure(): best-of-R time, weights/s, and the ratio to ml_dtypes' float32 -> E4M3 -> float32
   cast of the same tensor (which does less: no block scales, no error sums);
2. quantize() + dequantize(): the same, plus the extra memory the pair allocates beyond the
   input (tracemalloc peak, numpy buffers included), in MB and as a multiple of the tensor;
3. fixed cost per measure() call after the first: a 1x(block) tensor, fastest and median of 1,000
   calls (``:aw`` with activation weights; learned grids with fit_grids' grids given, as sampled
   mode calls it: the fit itself is work, not a fixed cost);
4. peak resident memory above the tensor of measure() and of quantize(), each in a fresh process
   on a larger tensor (--rss-elements, default 64M weights): the goal is <= the tensor + 256 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc

import ml_dtypes
import numpy as np
from rich.console import Console

from dse import render
from quant import dequantize, fit_grids, measure, parse_candidate, quantize

# SFP4 rounds onto three grids per block. Q4_0 and Q8_0 are llama.cpp's own arithmetic
# (quant/ggml.py); gguf.quants is timed beside them. The last four include fitting learned DD4
# codebooks to the tensor (goal: < 2 s at 4096x4096); DD4|DD4 (MPO2) fits two, then refits both jointly.
CANDIDATES = ("E2M3sUE4M4", "E2M1sE4M3@16", "E2M1sUE8M0@32", "NF4sUE4M4", "NF4sFP32@16", "E4M3sUE8M0@layer",
              "Q4_0", "Q8_0", "SFP4sE4M3", "DD4sUE4M4", "NF4|DD4sUE4M4", "DD4|DD4sUE4M4", "NF4|DD4sUE4M4:lut=E4M3")
# The pack/unpack targets: NVFP4-like, MXFP4, NF4, E2M3sUE4M4.
PACK_CANDIDATES = ("E2M1sE4M3@16", "E2M1sUE8M0@32", "NF4sUE4M4", "E2M3sUE4M4", "E2M1|INT4sE4M3",
                   "E4M3sUE8M0@layer")
# One per scale rule / grid kind / correction, for the fixed per-call cost; :aw with activation
# weights, learned grids with fit_grids' grids given (sampled mode's calls: the fit is work).
FIXED_COST_CANDIDATES = ("E2M1sE4M3@16", "E2M1sUE8M0@32", "E2M3sUE4M4", "E4M3sUE8M0@32", "INT8sUE8M0@32",
                         "INT4sE4M3", "NF4sUE4M4", "NF4sFP32@16", "BOF4S-16sE4M3", "SFP4sE4M3", "Q4_0", "Q8_0",
                         "E2M1|INT4sE4M3", "E2M1sE4M3@16:mse", "E2M1sE4M3@16:4o6", "E4M3sUE8M0@layer",
                         "E2M1sE4M3@16+opq(0.95)", "E2M1|INT4sE4M3:aw", "DD4sUE4M4", "NF4|DD4sUE4M4",
                         "E2M1sE4M3@16+res(1%)")


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cast_seconds(w: np.ndarray, repeat: int = 5) -> float:
    """Best-of time of ml_dtypes' float32 -> E4M3 -> float32 cast of ``w`` on one thread: the
    machine-speed reference the tables quote (187 ms for 16M weights on a quiet day here)."""
    return best_of(repeat, lambda: w.astype(ml_dtypes.float8_e4m3fn).astype(np.float32))


def extra_memory(fn) -> int:
    """Peak bytes allocated (and tracked) while ``fn`` runs."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


# One case of table 4, run as `python -c` in a fresh process: the peak RSS (VmHWM, reset through
# /proc/self/clear_refs after the tensor exists and the tables are built) minus the RSS before the call.
RSS_CASE = """
import json, sys, numpy as np
from quant import measure, parse_candidate, quantize
name, what, elements, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
w = np.random.default_rng(0).standard_normal(elements, dtype=np.float32).reshape(-1, 4096)
c = parse_candidate(name)
call = measure if what == "measure" else quantize
call(w[:64], c)
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
out = call(w, c, threads=threads)
print(json.dumps({"above": status("VmHWM:") - before}))
"""
RSS_CANDIDATES = ("E2M1sE4M3@16", "NF4|DD4sUE4M4")
RSS_GOAL_BYTES = 256 << 20


def peak_rss_above(name: str, what: str, elements: int, threads: int) -> int | None:
    """Bytes of peak RSS above the resident tensor for one measure()/quantize() call, or None where
    the kernel cannot reset the peak (not Linux)."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    run = subprocess.run([sys.executable, "-c", RSS_CASE, name, what, str(elements), str(threads)],
                         capture_output=True, text=True, check=True)
    above: int = json.loads(run.stdout)["above"]
    return above


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="quantizer threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--elements", type=int, default=1 << 24)
    parser.add_argument("--rss-elements", type=int, default=1 << 26, help="tensor size for the memory table")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count()
    console = Console(width=120)

    w = np.random.default_rng(0).standard_normal(args.elements, dtype=np.float32).reshape(-1, 4096)
    size = f"{w.size:,} weights ({w.shape[0]}x{w.shape[1]}), {threads} thread(s), best of {args.repeat}"
    baseline = cast_seconds(w, args.repeat)
    table = render.table(f"measure (quantize + error), {size}",
                         ["what", "time [ms]", "throughput [M weights/s]", "vs ml_dtypes [x]"])
    table.add_row("ml_dtypes f32->E4M3->f32 cast", f"{baseline * 1e3:.1f}", f"{w.size / baseline / 1e6:.0f}", "1.00")
    for name in CANDIDATES:
        c = parse_candidate(name)
        measure(w[:64], c)  # build lookup tables outside the timing
        t = best_of(args.repeat, lambda: measure(w, c, threads=args.threads))
        table.add_row(f"sop-dse measure {name}", f"{t * 1e3:.1f}", f"{w.size / t / 1e6:.0f}", f"{baseline / t:.2f}")
    from gguf import GGMLQuantizationType, quants

    for name in ("Q4_0", "Q8_0"):
        qtype = GGMLQuantizationType[name]
        t = best_of(args.repeat, lambda: quants.dequantize(quants.quantize(w, qtype), qtype))
        table.add_row(f"gguf.quants quantize + dequantize {name}", f"{t * 1e3:.1f}", f"{w.size / t / 1e6:.0f}",
                      f"{baseline / t:.2f}")
    console.print(table)

    table = render.table(f"quantize + dequantize, {size}",
                         ["what", "quantize [ms]", "dequantize [ms]", "throughput [M weights/s]",
                          "vs ml_dtypes [x]", "extra memory [MB]", "extra / tensor [x]"])
    for name in PACK_CANDIDATES:
        c = parse_candidate(name)
        dequantize(quantize(w[:64], c))
        tq = best_of(args.repeat, lambda: quantize(w, c, threads=args.threads))
        q = quantize(w, c, threads=args.threads)
        td = best_of(args.repeat, lambda: dequantize(q, threads=args.threads))
        del q
        peak = extra_memory(lambda: dequantize(quantize(w, c, threads=args.threads), threads=args.threads))
        t = tq + td
        table.add_row(name, f"{tq * 1e3:.1f}", f"{td * 1e3:.1f}", f"{w.size / t / 1e6:.0f}",
                      f"{baseline / t:.2f}", f"{peak / 1e6:.0f}", f"{peak / w.nbytes:.2f}")
    console.print(table)

    table = render.table("fixed cost per measure() call after the first (1,000 calls)",
                         ["candidate", "tensor", "fastest [ms]", "median [ms]"])
    for name in FIXED_COST_CANDIDATES:
        c = parse_candidate(name)
        small = w[:1, : c.block_size or 32]
        act = np.ones(small.shape[1]) if c.act_weighted else None
        grids = fit_grids(small, c, act=act) if c.learned else None
        measure(small, c, act=act, threads=1, grids=grids)
        times = []
        for _ in range(1000):
            start = time.perf_counter()
            measure(small, c, act=act, threads=1, grids=grids)
            times.append(time.perf_counter() - start)
        # the fastest call is the cost itself; the median adds what other processes take from this one
        label = name + (" (grids given)" if grids else "") + (" (act given)" if act is not None else "")
        table.add_row(label, f"1x{small.shape[1]}", f"{min(times) * 1e3:.3f}", f"{np.median(times) * 1e3:.3f}")
    console.print(table)

    tensor_mb = args.rss_elements * 4 / 2**20
    table = render.table(f"peak RSS above the tensor, {args.rss_elements:,} weights ({tensor_mb:.0f} MiB), "
                         f"{threads} thread(s), fresh process per call",
                         ["candidate", "call", "above the tensor [MiB]", "goal <= 256 MiB"])
    for name in RSS_CANDIDATES:
        for what in ("measure", "quantize"):
            above = peak_rss_above(name, what, args.rss_elements, threads)
            if above is None:
                table.add_row(name, what, "n/a (needs Linux /proc)", "-")
                continue
            table.add_row(name, what, f"{above / 2**20:.0f}", "yes" if above <= RSS_GOAL_BYTES else "NO")
    console.print(table)


if __name__ == "__main__":
    main()
