"""Optimizer speed on a Llama-3-8B-sized allocation problem: 224 tensors x 30 candidates.

Run: python benchmarks/bench_ilp.py. Instance: Llama-3-8B
projection shapes, error ~ numel * 2**(-2 bpw) * per-layer sensitivity). Prints a table.
"""

from __future__ import annotations

import time

import numpy as np
from rich.console import Console

from dse.ilp import Solver, build_mckp, solve, sweep
from dse.pareto import lagrangian_front, useful_options
from dse.problem import Caps, Problem
from dse.render import table

SHAPES = [(4096, 4096), (1024, 4096), (1024, 4096), (4096, 4096), (14336, 4096), (14336, 4096), (4096, 14336)]


def llama_like(items: int = 224, options: int = 30, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    numel = np.array([r * c for r, c in (SHAPES[i % 7] for i in range(items))], dtype=np.int64)
    bpw = np.sort(rng.uniform(2.0, 9.0, options))
    bits = numel[:, None] * bpw[None, :]
    error = (rng.lognormal(0, 1, items)[:, None] * numel[:, None] * 2.0 ** (-2 * bpw[None, :])
             * rng.uniform(0.8, 1.25, (items, options)))
    units = tuple(frozenset({f"u{k % 6}"}) for k in range(options))
    return Problem(tuple(f"t{i}" for i in range(items)), tuple(f"c{k}" for k in range(options)),
                   numel, error, bits, bits * 1e-12, units, {f"u{j}": 0.01 for j in range(6)})


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    problem = llama_like()
    rows = []
    front, t = timed(lambda: lagrangian_front(problem))
    rows.append(("Lagrangian hull (whole front)", f"{t * 1e3:.1f}", f"{len(front)} vertices"))
    mask, t = timed(lambda: useful_options(problem))
    rows.append(("dominance pruning", f"{t * 1e3:.1f}", f"{int(mask.sum())} of {mask.size} options kept"))
    solver = Solver()
    model, t_build = timed(lambda: build_mckp(problem, Caps(4.25), mask))
    _, t_solve = timed(lambda: solve(model, solver))
    rows.append(("build ILP (224 x 30)", f"{t_build * 1e3:.1f}", ""))
    rows.append(("one ILP solve at 4.25 bpw", f"{t_solve * 1e3:.1f}", type(solver.make()).__name__))
    budgets = list(np.linspace(3.0, 8.0, 50))
    points, t = timed(lambda: sweep(problem, budgets))
    rows.append(("50-point sweep (checks incl.)", f"{t * 1e3:.1f}", f"{len(points)} points"))
    out = table("Optimizer speed, 224 tensors x 30 candidates", ["step", "time [ms]", "note"])
    for r in rows:
        out.add_row(*r)
    Console().print(out)


if __name__ == "__main__":
    main()
