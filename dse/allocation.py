"""Allocation: the multiple-choice knapsack built from a measurement table, solved, and costed.

:func:`build_problem` turns the table into a :class:`dse.problem.Problem` (items are tensors, or
groups of tensors that share a format); :func:`solve_front` answers every requested budget (a
point, or why there is none) and adds the Lagrangian hull vertices between them;
:func:`baselines` applies each candidate uniformly.
Every point is priced by :mod:`hwcost` (:func:`hwcost.combined_cost` of its pairs' tensor costs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from dse.cache import SolutionCache
from dse.ilp import Answer, Solver, recheck, sweep
from dse.output import Validation
from dse.pareto import hull_points, lagrangian_hull, pareto_points
from dse.problem import Point, Problem
from dse.scenario import Scenario, ScenarioError
from dse.setup import Tensor
from hwcost import Hardware, TensorCost, combined_cost, datapath, tensor_cost


@dataclass(frozen=True)
class FrontPoint:
    """One point of the front, with its model-level cost."""

    bpw: float
    """Stored bits per weight [bit], all tensors together, per-tensor constants included."""
    bpw_streamed: float
    """Bits read per decode token / weights read per token [bit] (an embedding: one row per token)."""
    bpw_budgeted: float
    """What a budget compares with [bit]: the basis's bits without per-tensor constants, per weight."""
    error: float
    """The scenario's metric, summed over tensors."""
    energy_j_per_token: float
    tokens_per_s: float
    """Memory-bound upper bound [1/s]."""
    bytes_per_token: float
    decode_area_mm2: float
    source: str
    """'hull' (Lagrangian vertex), 'ilp' (optimal within the gap tolerance at a requested budget),
    'ilp-gap' (best answer found; ``gap`` says how close it is proven), 'top' (the least-error
    point) or 'uniform'."""
    budget_bpw: float | None
    assignment: dict[str, str]
    """tensor name -> candidate name."""
    gap: float = 0.0
    """Proven relative distance of ``error`` above the optimum at ``budget_bpw`` (0 off the budgets)."""
    validation: Validation | None = None
    """Measured output on the held-out text (models with a forward pass)."""


@dataclass(frozen=True)
class BudgetRow:
    """What the exploration says about one requested budget: a point, or why there is none."""

    budget_bpw: float
    status: str
    """'optimal', 'gap', 'top' or 'infeasible' (see :class:`dse.ilp.Answer`)."""
    note: str
    point: FrontPoint | None
    dominated: bool = False
    """Validated: the point measured worse than a cheaper one, so it gets no config."""


@dataclass(frozen=True)
class Allocation:
    """The allocation problem plus the tensors of each item, to cost its solutions."""

    problem: Problem
    members: list[list[Tensor]]
    """Tensors of each item."""
    costs: dict[tuple[str, str], TensorCost]
    """hwcost.tensor_cost of each (tensor, candidate) pair, priced once for every point."""


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
    costs = {(t, c): tensor_cost(by_tensor[t].weight_tensor(), by_name[c], hw) for t, c in rows}
    sparse = {(r.tensor, r.candidate): int(r.sparse_entries)
              for r in table[["tensor", "candidate", "sparse_entries"]].itertuples(index=False)}
    # per-tensor constants (FP32 factor, LUT image): stored and streamed, but not counted by a budget
    const = {key: (lambda b: b.tensor_bits + b.lut_bits)(by_name[key[1]].bits(by_tensor[key[0]].numel, sparse[key]))
             for key in rows}
    fetched = {t.name: t.weight_tensor().weights_per_step(hw.batch) / hw.batch for t in tensors}  # per token
    n_i, n_k = len(items), len(options)
    error = np.full((n_i, n_k), np.inf)
    bits = np.zeros((n_i, n_k))
    energy = np.zeros((n_i, n_k))
    streamed = np.zeros((n_i, n_k))
    limit = np.zeros((n_i, n_k))
    for i, (_, members) in enumerate(items):
        for k, name in enumerate(options):
            keys = [(m.name, name) for m in members]
            if not all(key in rows for key in keys):
                continue  # the candidate does not apply to every member
            error[i, k] = sum(rows[key][0] for key in keys)
            bits[i, k] = sum(rows[key][1] for key in keys)
            energy[i, k] = sum(costs[key].energy_pj_per_token.total_pj for key in keys) * 1e-12
            streamed[i, k] = sum(costs[key].bits_per_step / hw.batch for key in keys)
            if s.budget_basis == "streamed":  # the same per-weight bits, over the weights a token reads
                limit[i, k] = sum(fetched[m.name] * (rows[key][1] - const[key]) / m.numel
                                  for m, key in zip(members, keys))
            else:
                limit[i, k] = sum(rows[key][1] - const[key] for key in keys)
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
    streamed_numel = np.array([sum(fetched[m.name] for m in ms) for _, ms in items])
    problem = Problem(tuple(n for n, _ in items), tuple(options),
                      np.array([sum(m.numel for m in ms) for _, ms in items]), error, bits, energy,
                      tuple(units), area, budget_bits=limit,
                      budget_numel=float(streamed_numel.sum()) if s.budget_basis == "streamed" else None,
                      streamed=streamed, streamed_numel=streamed_numel)
    return Allocation(problem, [ms for _, ms in items], costs)


def front_point(s: Scenario, allocation: Allocation, point: Point, hw: Hardware, budget: float | None,
                gap: float = 0.0) -> FrontPoint:
    """A solved point with its model-level cost (hwcost.model_cost of its assignment)."""
    by_name = {c.name: c for c in s.candidates}
    chosen = [(t, allocation.problem.options[k]) for k, ms in zip(point.choice, allocation.members) for t in ms]
    cost = combined_cost([allocation.costs[t.name, c] for t, c in chosen], [by_name[c] for _, c in chosen], hw)
    return FrontPoint(point.bpw, point.bpw_streamed, point.budget_bpw, point.error, cost.energy_j_per_token,
                      cost.tokens_per_s, cost.bytes_per_token, cost.decode_area_mm2, point.source, budget,
                      {t.name: c for t, c in chosen}, gap)


def solve_front(s: Scenario, allocation: Allocation, hw: Hardware,
                threads: int | None = None) -> tuple[list[FrontPoint], list[BudgetRow]]:
    """The front (the answers at the requested budgets plus the hull vertices between them,
    dominance-filtered) and one row per requested budget; ``threads`` budgets are solved at once
    (None: one per core).

    Solved sweeps are cached by the problem's content, the budgets and the solver settings: a
    rerun with the same measurements, costs and budgets reads them back instead of solving
    again, after re-checking every answer against the caps and the Lagrangian bracket.
    """
    problem = allocation.problem
    solver = Solver(s.solver_backend, s.solver_time_limit_s, s.solver_gap_rel)
    hull = lagrangian_hull(problem)  # once per exploration: the sweep's bounds and the front's vertices
    cache = SolutionCache(s.cache_dir)
    key = cache.key([problem.error, problem.bits, problem.limit_bits, problem.energy, np.array(s.budgets_bpw)],
                    [repr(problem.items), repr(problem.options), repr(sorted(problem.unit_area_mm2.items())),
                     repr([sorted(u) for u in problem.units_of_option]),
                     repr((s.energy_j_per_token_max, s.decode_area_mm2_max)),
                     repr((s.solver_backend, s.solver_time_limit_s, s.solver_gap_rel, s.budget_basis))])
    caps = {"energy_j_per_token": s.energy_j_per_token_max, "decode_area_mm2": s.decode_area_mm2_max}
    stored = cache.get(key, len(problem.items), len(problem.options))
    answers = None if stored is None else [Answer.from_record(problem, r) for r in stored]
    if answers is None or not recheck(problem, list(s.budgets_bpw), answers, hull, gap_rel=solver.gap_rel, **caps):
        answers = sweep(problem, list(s.budgets_bpw), solver=solver, hull=hull, threads=threads, **caps)
        cache.put(key, [a.record() for a in answers])
    rows = []
    answered: dict[tuple[int, ...], FrontPoint] = {}  # the lowest budget giving each answer labels it on the front
    for a in answers:
        point = None if a.point is None else front_point(s, allocation, a.point, hw, a.budget_bpw, a.gap)
        rows.append(BudgetRow(a.budget_bpw, a.status, a.note, point))
        if a.point is not None and point is not None:
            answered.setdefault(a.point.choice, point)
    points = [a.point for a in answers if a.point is not None]
    if s.energy_j_per_token_max is None and s.decode_area_mm2_max is None:
        lo, hi = min(s.budgets_bpw), max(s.budgets_bpw)
        points += [p for p in hull_points(problem, hull, lo, hi) if p.choice not in answered]
    unique = {p.choice: p for p in points}
    front = [answered.get(p.choice) or front_point(s, allocation, p, hw, None)
             for p in pareto_points(list(unique.values()))]
    return front, rows


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
