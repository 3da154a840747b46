"""Dominance filtering and the Lagrangian (convex-hull) front of a multiple-choice knapsack.

Lagrangian front: for a multiplier lambda each item independently picks
argmin_k error[l,k] + lambda * bits[l,k]. Sweeping lambda visits the vertices of the lower
convex hull of the (bits, error) front, and computing them takes milliseconds: each item's own
hull is walked in order of its marginal error saving per bit (Sinha & Zoltners, "The multiple-choice
knapsack problem", Operations Research 27(3), 1979: the LP relaxation of the MCKP). A hull
vertex is optimal at its own budget, and the hull evaluated at a budget B is a lower bound on the
integer optimum there: a check on any solver "Optimal".
"""

from __future__ import annotations

from collections.abc import Sequence

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


def useful_options(problem: Problem) -> np.ndarray:
    """(n_items, n_options) mask of options not dominated within their item in
    (bits, error, energy) by an option needing no hardware unit beyond this one's.

    A dominated option can never be in an optimal assignment, so the ILP drops it. An option
    needing other units may still pay (it can spare a unit's area), so it does not dominate.
    """
    mask = problem.allowed.copy()
    units = problem.units_of_option
    same_unit = np.array([[ub <= ua for ub in units] for ua in units])  # [a, b]: b needs no more
    order = np.arange(len(problem.options))
    for i in range(len(problem.items)):
        costs = np.stack([problem.bits[i], problem.error[i], problem.energy[i]], axis=1)
        costs[~mask[i]] = np.inf
        le = np.all(costs[None, :, :] <= costs[:, None, :], axis=2)  # [a, b]: b no worse than a
        lt = np.any(costs[None, :, :] < costs[:, None, :], axis=2)
        tie_first = ~lt & (order[None, :] < order[:, None])  # equal costs: keep the first
        dominated = (le & (lt | tie_first) & same_unit & mask[i][None, :]).any(axis=1)
        mask[i] &= ~dominated
    return mask


def lagrangian_front(problem: Problem) -> list[Point]:
    """Vertices of the lower convex hull of the (bpw, error) front, from fewest bits up."""
    n_items = len(problem.items)
    hulls = [_item_hull(problem.bits[i], problem.error[i]) for i in range(n_items)]
    choice = np.array([h[0] for h in hulls])
    # every move along an item's hull, with its error saved per extra bit
    moves = []
    for i, hull in enumerate(hulls):
        for a, b in zip(hull[:-1], hull[1:]):
            d_bits = problem.bits[i, b] - problem.bits[i, a]
            d_err = problem.error[i, a] - problem.error[i, b]
            moves.append((d_err / d_bits, i, b))
    # steepest first; an item's own moves are already in decreasing slope order (convexity)
    moves.sort(key=lambda m: (-m[0], m[1]))
    points = [_hull_point(problem, choice)]
    for _, i, b in moves:
        choice[i] = b
        points.append(_hull_point(problem, choice))
    return points


def hull_lower_bound(front: Sequence[Point], bpw: float) -> float:
    """The hull's error at ``bpw`` (linear between vertices): no assignment within bpw does better."""
    xs = np.array([p.bpw for p in front])
    ys = np.array([p.error for p in front])
    if bpw <= xs[0]:
        return float(ys[0]) if np.isclose(bpw, xs[0]) else float("inf")
    return float(np.interp(bpw, xs, ys))


def _hull_point(problem: Problem, choice: np.ndarray) -> Point:
    p = problem.evaluate(choice)
    return Point(p.bpw, p.error, p.energy_j_per_token, p.decode_area_mm2, p.choice, source="hull")


def _item_hull(bits: np.ndarray, error: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of one item's (bits, error) options, by bits ascending.

    Starts at the fewest-bits option (lowest error among ties) and ends at the lowest error.
    """
    idx = [int(k) for k in np.flatnonzero(np.isfinite(error))]
    idx.sort(key=lambda k: (bits[k], error[k]))
    hull: list[int] = []
    for k in idx:
        if hull and error[k] >= error[hull[-1]]:
            continue  # more bits and no less error: never on the lower hull
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or above the chord a-k: drop it
            if (error[b] - error[a]) * (bits[k] - bits[a]) >= (error[k] - error[a]) * (bits[b] - bits[a]):
                hull.pop()
            else:
                break
        hull.append(k)
    return hull


def reduced_cost_mask(problem: Problem, front: Sequence[Point], bpw: float, mask: np.ndarray) -> np.ndarray:
    """Options that can still be optimal at ``bpw`` under a bit budget alone (reduced-cost fixing).

    With the hull slope lambda at ``bpw`` and L = the hull bound there, every feasible assignment
    x has error(x) >= L + sum_i r[i, x_i], where r[i,k] = e[i,k] + lambda b[i,k] - min_k'(same).
    So an option with r > U - L, U being the error of the best hull vertex within budget, cannot
    beat that vertex: it is dropped. Exact, and it leaves a handful of options per budget.
    """
    xs = np.array([p.bpw for p in front])
    j = int(np.searchsorted(xs, bpw, side="right")) - 1
    if j < 0:
        return mask
    if j + 1 < len(front):
        d_bits = (front[j + 1].bpw - front[j].bpw) * problem.total_numel
        lam = (front[j].error - front[j + 1].error) / d_bits if d_bits > 0 else 0.0
    else:
        lam = 0.0
    lower = hull_lower_bound(front, bpw)
    upper = min(p.error for p in front[: j + 1])
    lagr = np.where(mask, problem.error + lam * problem.bits, np.inf)
    reduced = lagr - lagr.min(axis=1, keepdims=True)
    slack = (upper - lower) + 1e-9 * max(abs(upper), 1e-300)
    return mask & (reduced <= slack)


def greedy_fill(problem: Problem, front: Sequence[Point], bpw: float, mask: np.ndarray) -> np.ndarray:
    """A good feasible assignment at ``bpw``: the hull vertex under it, then repeatedly the single
    option change that saves the most error within the leftover bits (a warm start for the ILP)."""
    fits = [p for p in front if p.bpw <= bpw]
    choice = np.array(fits[-1].choice if fits else front[0].choice)
    budget = bpw * problem.total_numel
    rows = np.arange(len(problem.items))
    while True:
        used = problem.bits[rows, choice].sum()
        gain = problem.error[rows, choice][:, None] - problem.error
        extra = problem.bits - problem.bits[rows, choice][:, None]
        ok = mask & (extra <= budget - used) & (gain > 0)
        if not ok.any():
            return choice
        i, k = np.unravel_index(np.argmax(np.where(ok, gain, -np.inf)), gain.shape)
        choice[i] = k
