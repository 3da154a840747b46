"""Optimizer speed and memory: one budget and a whole sweep, at Llama and DeepSeek-V3 scale.

Run: python benchmarks/bench_ilp.py [--solver highs|cbc|both] [--sizes small,large]. Instances
are synthetic allocation problems with LLM-like costs (projection shapes, error ~ numel *
2**(-2 bpw) * per-tensor sensitivity):
- 884 tensors x 30 candidates: Llama-3.1-70B's 80 layers x 7 projections + 324 more, say;
- 45,000 tensors x 10 candidates: DeepSeek-V3 with every routed expert a tensor (58 MoE layers
  x 256 experts x 3 projections = 44,544, plus attention and dense layers).
Prints a table: wall-clock time, CPU time (this process and the CBC subprocesses it waits for;
steadier than wall clock on a shared machine) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from rich.console import Console

from dse.ilp import Solver, sweep
from dse.pareto import lagrangian_hull
from dse.problem import Problem
from dse.render import table

SHAPES = [(4096, 4096), (1024, 4096), (1024, 4096), (4096, 4096), (14336, 4096), (14336, 4096), (4096, 14336)]
EXPERT_SHAPES = [(2048, 7168), (2048, 7168), (7168, 2048)]


def instance(items: int, options: int, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    shapes = EXPERT_SHAPES if items > 10_000 else SHAPES
    numel = np.array([r * c for r, c in (shapes[i % len(shapes)] for i in range(items))], dtype=np.int64)
    bpw = np.sort(rng.uniform(2.0, 9.0, options))
    per_tensor = 32.0  # an FP32 tensor factor: stored, not counted by a budget
    bits = numel[:, None] * bpw[None, :] + per_tensor
    error = (rng.lognormal(0, 1, items)[:, None] * numel[:, None] * 2.0 ** (-2 * bpw[None, :])
             * rng.uniform(0.8, 1.25, (items, options)))
    energy = bits * 1e-12 * rng.uniform(0.8, 1.2, (1, options))
    units = tuple(frozenset({f"u{k % 6}"}) for k in range(options))
    return Problem(tuple(f"t{i}" for i in range(items)), tuple(f"c{k}" for k in range(options)),
                   numel, error, bits, energy, units, {f"u{j}": 0.01 for j in range(6)}, budget_bits=bits - per_tensor)


def cpu_s() -> float:
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def timed(fn):
    start, cpu = time.perf_counter(), cpu_s()
    out = fn()
    return out, (time.perf_counter() - start, cpu_s() - cpu)


def seconds(t: tuple[float, float]) -> tuple[str, str]:
    return f"{t[0]:.2f}", f"{t[1]:.2f}"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--solver", default="both", choices=["highs", "cbc", "both"])
    ap.add_argument("--sizes", default="small,large")
    args = ap.parse_args()
    solvers = ["highs", "cbc"] if args.solver == "both" else [args.solver]
    sizes = {"small": (884, 30), "large": (45_000, 10)}
    out = table("Optimizer: one budget and a whole sweep (21 budgets, 3.0-8.0 bpw)",
                ["instance", "solver", "step", "wall [s]", "CPU [s]", "peak RSS [MB]", "note"])
    for size in args.sizes.split(","):
        items, options = sizes[size]
        name = f"{items:,} x {options}"
        problem = instance(items, options)
        hull, t = timed(lambda: lagrangian_hull(problem))
        out.add_row(name, "-", "Lagrangian hull (whole front)", *seconds(t), f"{peak_mb():.0f}", f"{len(hull):,} vertices")
        budgets = [round(float(b), 4) for b in np.linspace(3.0, 8.0, 21)]
        for backend in solvers:
            solver = Solver(backend)
            [one], t = timed(lambda: sweep(problem, [4.25], solver=solver))
            out.add_row(name, backend, "one budget (4.25 bpw)", *seconds(t), f"{peak_mb():.0f}",
                        f"{one.status}, gap {one.gap:.1e}")
            # threads=1: budgets one at a time for both solvers, like for like (CBC is sequential)
            answers, t = timed(lambda: sweep(problem, budgets, solver=solver, threads=1))
            worst = max(a.gap for a in answers if a.point is not None)
            statuses = ", ".join(f"{s} {sum(a.status == s for a in answers)}"
                                 for s in ("optimal", "gap", "top", "infeasible") if any(a.status == s for a in answers))
            out.add_row(name, backend, "whole sweep (21 budgets)", *seconds(t), f"{peak_mb():.0f}",
                        f"{statuses}; worst gap {worst:.1e}")
            if items > 10_000:
                continue  # energy caps at this size: not a target, minutes per budget (README)
            e_cap = np.median([a.point.energy_j_per_token for a in answers if a.point is not None])
            capped, t = timed(lambda: sweep(problem, budgets[::4], energy_j_per_token=float(e_cap), solver=solver,
                                            threads=1))
            worst = max((a.gap for a in capped if a.point is not None), default=float("nan"))
            out.add_row(name, backend, "6 budgets + energy cap", *seconds(t), f"{peak_mb():.0f}",
                        f"{sum(a.point is not None for a in capped)} answered; worst gap {worst:.1e}")
    Console(width=140).print(out)


if __name__ == "__main__":
    main()
