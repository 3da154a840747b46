"""Dominance filtering and the Lagrangian (convex-hull) front of a multiple-choice knapsack.

Lagrangian front: for a multiplier lambda each item independently picks
argmin_k cost[i,k] + lambda * bits[i,k]. Sweeping lambda visits the vertices of the lower convex
hull of the (bits, cost) front. Each item's own lower hull is a chain of moves with decreasing
error saved per extra bit; merging every item's moves by that slope gives the whole hull in
O(total options x log) time and memory (Sinha & Zoltners 1979, "The multiple-choice knapsack
problem", Oper. Res. 27(3), the LP relaxation). A hull vertex is optimal at its own budget, and
the hull evaluated at a budget B is a lower bound on the integer optimum there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dse.problem import Point, Problem


def pareto_mask(costs: np.ndarray) -> np.ndarray:
    """True for rows not dominated by another row (all objectives minimised; ties kept once).

    Args:
        costs: (n, m) objectives.
    """
    n = costs.shape[0]
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        others = costs[keep]
        dominated_by = np.all(others <= costs[i], axis=1) & np.any(others < costs[i], axis=1)
        if dominated_by.any():
            keep[i] = False
            continue
        # drop exact duplicates after the first occurrence
        same = np.all(costs == costs[i], axis=1)
        same[: i + 1] = False
        keep &= ~same
    return keep


def pareto_points(points: Sequence[Point]) -> list[Point]:
    """The non-dominated points in (bpw, error, energy, area), sorted by bpw."""
    if not points:
        return []
    costs = np.array([[p.bpw, p.error, p.energy_j_per_token, p.decode_area_mm2] for p in points])
    keep = pareto_mask(costs)
    return sorted((p for p, k in zip(points, keep) if k), key=lambda p: (p.bpw, p.error))


def useful_options(problem: Problem, mask: np.ndarray | None = None) -> np.ndarray:
    """(n_items, n_options) the options of ``mask`` not dominated within their item in
    (budget bits, stored bits, error, energy) by an option needing no hardware unit beyond this one's.

    A dominated option can never be in an optimal assignment, so the ILP drops it. An option
    needing other units may still pay (it can spare a unit's area), so it does not dominate.
    Only items with several options in ``mask`` are compared (the others have nothing to drop).
    """
    mask = (problem.allowed if mask is None else mask).copy()
    rows = np.flatnonzero(mask.sum(axis=1) > 1)
    mask[rows] = _undominated(problem, mask, rows)
    return mask


def _undominated(problem: Problem, mask: np.ndarray, rows: np.ndarray) -> np.ndarray:
    units = problem.units_of_option
    same_unit = np.array([[ub <= ua for ub in units] for ua in units])  # [a, b]: b needs no more
    order = np.arange(len(problem.options))
    mask = mask[rows]
    costs = np.stack([problem.limit_bits[rows], problem.bits[rows], problem.error[rows], problem.energy[rows]], axis=2)
    costs = np.where(mask[:, :, None], costs, np.inf)  # (n, K, 4)
    le = np.all(costs[:, None, :, :] <= costs[:, :, None, :], axis=3)  # [i, a, b]: b no worse than a
    lt = np.any(costs[:, None, :, :] < costs[:, :, None, :], axis=3)
    tie_first = ~lt & (order[None, :] < order[:, None])[None]  # equal costs: keep the first
    dominated = (le & (lt | tie_first) & same_unit[None] & mask[:, None, :]).any(axis=2)
    return mask & ~dominated


@dataclass(frozen=True)
class Hull:
    """The lower convex hull of (budget bits, cost) over all assignments of a problem.

    Vertex 0 is every item at its fewest-bit option; vertex j applies the first j moves.
    ``cost`` is error + mu * energy (mu = 0: the plain error front).
    """

    mu: float
    """Energy multiplier [error per J/token] folded into the cost."""
    steps: np.ndarray
    """(n_items, max_steps + 1) option index along each item's own hull (padded with its last)."""
    item: np.ndarray
    """(M,) item moved by move j."""
    x: np.ndarray
    """(M + 1,) budget bits at each vertex."""
    cost: np.ndarray
    """(M + 1,) error + mu * energy at each vertex."""
    energy: np.ndarray
    """(M + 1,) J/token at each vertex."""
    slope: np.ndarray
    """(M,) cost saved per extra bit of move j, non-increasing."""

    def __len__(self) -> int:
        return len(self.x)

    def choice(self, j: int) -> np.ndarray:
        """(n_items,) option per item at vertex ``j``."""
        counts = np.bincount(self.item[:j], minlength=self.steps.shape[0])
        return self.steps[np.arange(self.steps.shape[0]), counts]

    def below(self, bits: float) -> int:
        """Index of the last vertex within ``bits`` (-1: none)."""
        return int(np.searchsorted(self.x, bits * (1 + 1e-12), side="right")) - 1

    def bound(self, bits: float) -> float:
        """The hull's cost at ``bits`` (linear between vertices): no assignment within ``bits`` costs less."""
        if bits < self.x[0] * (1 - 1e-12):
            return float("inf")
        return float(np.interp(bits, self.x, self.cost))

    def multiplier(self, bits: float) -> float:
        """lambda at ``bits``: the slope of the hull segment there (0 beyond the last vertex)."""
        j = self.below(bits)
        return float(self.slope[j]) if 0 <= j < len(self.slope) else 0.0


def lagrangian_hull(problem: Problem, mu: float = 0.0, mask: np.ndarray | None = None) -> Hull:
    """The hull of (limit bits, error + mu * energy), from fewest bits up. O(n K^2 + M log M).

    Each item's hull is found by gift wrapping (at most K steps, vectorized over items); the
    moves of all items are then merged by slope, steepest first.
    """
    mask = problem.allowed if mask is None else mask
    x = np.where(mask, problem.limit_bits, np.inf)
    y = np.where(mask, problem.error + mu * problem.energy if mu else problem.error, np.inf)
    n, k_opts = x.shape
    rows = np.arange(n)
    cur = np.lexsort((y, x), axis=1)[:, 0]  # fewest bits, then least cost
    steps = [cur]
    moved_items, moved_slope, moved_step = [], [], []
    for step in range(k_opts - 1):
        dx = x - x[rows, cur][:, None]
        dy = y[rows, cur][:, None] - y
        ok = mask & (dx > 0) & (dy > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(ok, dy / np.where(ok, dx, 1.0), -np.inf)
        best = slope.max(axis=1)
        active = np.flatnonzero(best > -np.inf)
        if not len(active):
            break
        nearest = np.where(slope[active] == best[active, None], dx[active], np.inf).argmin(axis=1)  # collinear: each a vertex
        cur = cur.copy()
        cur[active] = nearest
        steps.append(cur)
        moved_items.append(active)
        moved_slope.append(best[active])
        moved_step.append(np.full(len(active), step))
    steps_arr = np.stack(steps, axis=1)
    item = np.concatenate(moved_items) if moved_items else np.zeros(0, dtype=np.int64)
    slope = np.concatenate(moved_slope) if moved_slope else np.zeros(0)
    step_of = np.concatenate(moved_step) if moved_step else np.zeros(0, dtype=np.int64)
    order = np.lexsort((item, step_of, -slope))  # steepest first; an item's own moves stay in order
    item, slope, step_of = item[order], slope[order], step_of[order]
    new, old = steps_arr[item, step_of + 1], steps_arr[item, step_of]
    first = steps_arr[:, 0]
    xs = np.concatenate([[x[rows, first].sum()], x[item, new] - x[item, old]]).cumsum()
    cost = np.concatenate([[y[rows, first].sum()], y[item, new] - y[item, old]]).cumsum()
    energy = np.concatenate([[problem.energy[rows, first].sum()],
                             problem.energy[item, new] - problem.energy[item, old]]).cumsum()
    return Hull(mu, steps_arr, item, xs, cost, energy, slope)


def hull_points(problem: Problem, hull: Hull, lo_bpw: float, hi_bpw: float, at_most: int = 200) -> list[Point]:
    """Hull vertices whose budget bpw lies in [lo_bpw, hi_bpw], at most ``at_most`` of them spread
    evenly over the range (a 45,000-item hull has ~400,000 vertices; a plot needs a few hundred)."""
    bpw = hull.x / problem.limit_numel
    inside = np.flatnonzero((bpw >= lo_bpw - 1e-9) & (bpw <= hi_bpw + 1e-9))
    if len(inside) > at_most:
        targets = np.linspace(bpw[inside[0]], bpw[inside[-1]], at_most)
        inside = np.unique(inside[np.clip(np.searchsorted(bpw[inside], targets), 0, len(inside) - 1)])
    return [problem.evaluate(hull.choice(int(j)), source="hull") for j in inside]


def reduced_cost_mask(problem: Problem, hull: Hull, bits: float, mask: np.ndarray, slack: float) -> np.ndarray:
    """Options that can still be in an assignment with error below U = L + ``slack`` (reduced-cost fixing).

    With lambda the hull slope at ``bits`` and L the Lagrangian bound there (``hull.bound(bits)``
    minus mu times the energy cap), every assignment x meeting the caps has
    error(x) >= L + sum_i r[i, x_i], where r[i,k] = c[i,k] + lambda b[i,k] - min_k'(same) and
    c = error + mu * energy. So an option with r > U - L cannot be in any assignment better than
    U: it is dropped. Exact.
    """
    lam = hull.multiplier(bits)
    cost = problem.error + hull.mu * problem.energy if hull.mu else problem.error
    lagr = np.where(mask, cost + lam * problem.limit_bits, np.inf)
    reduced = lagr - lagr.min(axis=1, keepdims=True)
    return mask & (reduced <= slack)


def greedy_fill(problem: Problem, choice: np.ndarray, bits: float, mask: np.ndarray,
                energy: float | None = None, options: np.ndarray | None = None) -> np.ndarray:
    """Improve ``choice`` within ``bits`` (and ``energy`` J/token): repeatedly the single option
    change among ``mask`` (and the ``options`` (n_options,) allowed, e.g. those needing no new
    hardware unit) that saves the most error within what is left (a warm start for the ILP)."""
    choice = choice.copy()
    m = mask if options is None else mask & options[None, :]
    free = np.flatnonzero(m.sum(axis=1) > 1)
    if not len(free):
        return choice
    b, e, en, m = problem.limit_bits[free], problem.error[free], problem.energy[free], m[free]
    rows = np.arange(len(free))
    all_rows = np.arange(len(choice))
    used = problem.limit_bits[all_rows, choice].sum()
    used_e = problem.energy[all_rows, choice].sum()
    while True:
        cur = choice[free]
        gain = e[rows, cur][:, None] - e
        extra = b - b[rows, cur][:, None]
        extra_e = en - en[rows, cur][:, None]
        ok = m & (extra <= bits - used) & (gain > 0)
        if energy is not None:
            ok &= extra_e <= energy - used_e
        if not ok.any():
            return choice
        i, k = np.unravel_index(np.argmax(np.where(ok, gain, -np.inf)), gain.shape)
        used += extra[i, k]
        used_e += extra_e[i, k]
        choice[free[i]] = k
