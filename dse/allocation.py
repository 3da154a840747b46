"""Allocation: the multiple-choice knapsack built from a measurement table, solved, and costed.

:func:`build_problem` turns the table into a :class:`dse.problem.Problem` (items are tensors, or
groups of tensors that share a format); :func:`solve_front` solves it at every budget and adds
the Lagrangian hull vertices between them; :func:`baselines` applies each candidate uniformly.
Every point is priced by :func:`hwcost.model_cost`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from dse.cache import SolutionCache
from dse.ilp import Solver, recheck, sweep
from dse.pareto import lagrangian_front, pareto_points
from dse.output import Validation
from dse.problem import Point, Problem
from dse.scenario import Scenario, ScenarioError
from dse.setup import Tensor
from hwcost import Hardware, datapath, model_cost, tensor_cost


@dataclass(frozen=True)
class FrontPoint:
    """One point of the front, with its model-level cost."""

    bpw: float
    """Bits per weight [bit], all tensors together."""
    error: float
    """The scenario's metric, summed over tensors."""
    energy_j_per_token: float
    tokens_per_s: float
    """Memory-bound upper bound [1/s]."""
    bytes_per_token: float
    decode_area_mm2: float
    source: str
    """'hull' (Lagrangian vertex), 'ilp' (integer program at a requested budget) or 'uniform'."""
    budget_bpw: float | None
    assignment: dict[str, str]
    """tensor name -> candidate name."""
    validation: Validation | None = None
    """Measured output on the held-out text (models with a forward pass)."""


@dataclass(frozen=True)
class Allocation:
    """The allocation problem plus the tensors of each item, to cost its solutions."""

    problem: Problem
    members: list[list[Tensor]]
    """Tensors of each item."""


def _items(s: Scenario, tensors: Sequence[Tensor]) -> list[tuple[str, list[Tensor]]]:
    """Optimizer items: groups of roles within one layer share a format; others stand alone."""
    role_group = {role: tuple(g) for g in s.groups for role in g}
    items: dict[tuple[object, ...], list[Tensor]] = {}
    for t in tensors:
        group = role_group.get(t.role)
        key = (t.source, t.layer, group) if group and t.layer is not None else (t.name,)
        items.setdefault(key, []).append(t)
    out = []
    for members in items.values():
        name = members[0].name if len(members) == 1 else "+".join(m.name for m in members)
        out.append((name, members))
    return out


def build_problem(s: Scenario, tensors: Sequence[Tensor], table: pd.DataFrame, hw: Hardware) -> Allocation:
    """The allocation problem: per item and candidate the summed error, bits and energy."""
    items = _items(s, tensors)
    options = [c.name for c in s.candidates]
    by_name = {c.name: c for c in s.candidates}
    by_tensor = {t.name: t for t in tensors}
    rows = {(r.tensor, r.candidate): (r.error, r.total_bits)
            for r in table[["tensor", "candidate", "error", "total_bits"]].itertuples(index=False)}
    energy_pj = {(t, c): tensor_cost(by_tensor[t].weight_tensor(), by_name[c], hw).energy_pj_per_token.total_pj
                 for t, c in rows}
    n_i, n_k = len(items), len(options)
    error = np.full((n_i, n_k), np.inf)
    bits = np.zeros((n_i, n_k))
    energy = np.zeros((n_i, n_k))
    for i, (_, members) in enumerate(items):
        for k, name in enumerate(options):
            keys = [(m.name, name) for m in members]
            if not all(key in rows for key in keys):
                continue  # the candidate does not apply to every member
            error[i, k] = sum(rows[key][0] for key in keys)
            bits[i, k] = sum(rows[key][1] for key in keys)
            energy[i, k] = sum(energy_pj[key] for key in keys) * 1e-12
    empty = [items[i][0] for i in range(n_i) if not np.isfinite(error[i]).any()]
    if empty:
        raise ScenarioError(f"{s.path}: no candidate applies to {empty[0]}; "
                            "add one with a block size that divides its rows")
    units: list[frozenset[str]] = []
    area: dict[str, float] = {}
    for name in options:
        needed = set()
        for item in datapath(by_name[name], hw).area:
            unit = f"{item.key}={item.area_um2:.6g}um2"
            area[unit] = item.area_um2 * 1e-6
            needed.add(unit)
        units.append(frozenset(needed))
    problem = Problem(tuple(n for n, _ in items), tuple(options),
                      np.array([sum(m.numel for m in ms) for _, ms in items]), error, bits, energy,
                      tuple(units), area)
    return Allocation(problem, [ms for _, ms in items])


def front_point(s: Scenario, allocation: Allocation, point: Point, hw: Hardware, budget: float | None) -> FrontPoint:
    """A solved point with its model-level cost (hwcost.model_cost of its assignment)."""
    by_name = {c.name: c for c in s.candidates}
    chosen = [(t, allocation.problem.options[k]) for k, ms in zip(point.choice, allocation.members) for t in ms]
    cost = model_cost([(t.weight_tensor(), by_name[c]) for t, c in chosen], hw)
    return FrontPoint(point.bpw, point.error, cost.energy_j_per_token, cost.tokens_per_s, cost.bytes_per_token,
                      cost.decode_area_mm2, point.source, budget, {t.name: c for t, c in chosen})


def solve_front(s: Scenario, allocation: Allocation, hw: Hardware) -> list[FrontPoint]:
    """ILP points at the requested budgets plus the hull vertices between them, dominance-filtered.

    Solved sweeps are cached by the problem's content, the budgets and the solver with its time
    limit: a rerun with the same measurements, costs and budgets reads them back instead of
    solving again, after checking them against the budgets and the Lagrangian bracket.
    """
    problem = allocation.problem
    solver = Solver(s.solver_backend, s.solver_time_limit_s)
    cache = SolutionCache(s.cache_dir)
    key = cache.key([problem.error, problem.bits, problem.energy, np.array(s.budgets_bpw)],
                    [repr(problem.items), repr(problem.options), repr(sorted(problem.unit_area_mm2.items())),
                     repr([sorted(u) for u in problem.units_of_option]),
                     repr((s.energy_j_per_token_max, s.decode_area_mm2_max)),
                     s.solver_backend, repr(s.solver_time_limit_s)])
    caps = {"energy_j_per_token": s.energy_j_per_token_max, "decode_area_mm2": s.decode_area_mm2_max}
    cached = cache.get(key, len(problem.items), len(problem.options))
    ilp = [replace(problem.evaluate(np.array(choice)), source=label) for label, choice in cached or []]
    if cached is None or not recheck(problem, list(s.budgets_bpw), ilp, **caps):  # re-verified, never trusted
        ilp = sweep(problem, list(s.budgets_bpw), solver=solver, **caps)
        cache.put(key, [(p.source, list(p.choice)) for p in ilp])
    budget_of = {p.choice: b for p, b in zip(ilp, s.budgets_bpw)}
    points = list(ilp)
    if s.energy_j_per_token_max is None and s.decode_area_mm2_max is None:
        lo, hi = min(s.budgets_bpw), max(s.budgets_bpw)
        points += [p for p in lagrangian_front(problem) if lo - 1e-9 <= p.bpw <= hi + 1e-9]
    unique = {p.choice: p for p in sorted(points, key=lambda p: p.source.startswith("ilp"))}  # ILP label wins (last)
    front = pareto_points(list(unique.values()))
    return [front_point(s, allocation, p, hw, budget_of.get(p.choice)) for p in front]


def baselines(s: Scenario, allocation: Allocation, hw: Hardware) -> list[FrontPoint]:
    """Every candidate applied uniformly, where it applies to every item."""
    problem = allocation.problem
    out = []
    for k in range(len(problem.options)):
        if not np.isfinite(problem.error[:, k]).all():
            continue
        point = replace(problem.evaluate(np.full(len(problem.items), k)), source="uniform")
        out.append(front_point(s, allocation, point, hw, None))
    return sorted(out, key=lambda p: p.bpw)
