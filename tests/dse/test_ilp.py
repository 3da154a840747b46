"""The optimizer: ILP against brute force, the hull against the ILP, dominance, infeasibility."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.ilp import InfeasibleBudgetError, sweep
from dse.pareto import hull_lower_bound, lagrangian_front, pareto_mask, pareto_points, useful_options
from dse.problem import Problem


def random_problem(seed: int, items: int, options: int, units: int = 1) -> Problem:
    rng = np.random.default_rng(seed)
    numel = rng.integers(1, 5, items) * 1024
    bpw = np.sort(rng.uniform(2.0, 9.0, options))
    bits = numel[:, None] * bpw[None, :]
    sens = rng.lognormal(0, 1, items)
    error = sens[:, None] * numel[:, None] * 2.0 ** (-2 * bpw[None, :]) * rng.uniform(0.8, 1.25, (items, options))
    energy = bits * 1e-12
    unit_of = tuple(frozenset({f"u{k % units}"}) for k in range(options))
    return Problem(tuple(f"layer.{i}" for i in range(items)), tuple(f"c{k}" for k in range(options)),
                   numel, error, bits, energy, unit_of, {f"u{j}": 0.1 * (j + 1) for j in range(units)})


def brute_force(problem: Problem, bpw: float, area: float | None = None):
    best = None
    for choice in itertools.product(range(len(problem.options)), repeat=len(problem.items)):
        p = problem.evaluate(np.array(choice))
        if p.bpw > bpw + 1e-12 or (area is not None and p.decode_area_mm2 > area + 1e-12):
            continue
        if best is None or p.error < best.error:
            best = p
    return best


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 4), st.integers(2, 5), st.floats(0.1, 0.9))
def test_ilp_equals_brute_force(seed, items, options, where):
    problem = random_problem(seed, items, options)
    lo = problem.evaluate(problem.bits.argmin(axis=1)).bpw
    hi = problem.evaluate(problem.bits.argmax(axis=1)).bpw
    budget = lo + where * (hi - lo)
    [point] = sweep(problem, [budget])
    assert point.error == pytest.approx(brute_force(problem, budget).error, rel=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.2, 0.8))
def test_ilp_with_fixed_charge_area_equals_brute_force(seed, where):
    problem = random_problem(seed, 3, 4, units=2)
    lo = problem.evaluate(problem.bits.argmin(axis=1)).bpw
    hi = problem.evaluate(problem.bits.argmax(axis=1)).bpw
    budget = lo + where * (hi - lo)
    area = 0.15  # only unit u0 (0.1 mm2) fits
    expected = brute_force(problem, budget, area)
    if expected is None:
        with pytest.raises(InfeasibleBudgetError):
            sweep(problem, [budget], decode_area_mm2=area)
        return
    [point] = sweep(problem, [budget], decode_area_mm2=area)
    assert point.decode_area_mm2 <= area
    assert point.error == pytest.approx(expected.error, rel=1e-6)


def test_sweep_points_meet_budgets_and_form_a_front():
    problem = random_problem(3, 30, 12)
    budgets = list(np.linspace(3.0, 8.0, 11))
    points = sweep(problem, budgets)
    for b, p in zip(budgets, points):
        assert p.bpw <= b + 1e-9
    front = pareto_points(points)
    costs = np.array([[p.bpw, p.error] for p in front])
    assert pareto_mask(costs).all()
    assert all(np.diff(costs[:, 1]) < 0)  # more bits, strictly less error along the front


def test_hull_vertices_are_ilp_optimal_and_bound_it():
    problem = random_problem(5, 20, 8)
    hull = lagrangian_front(problem)
    for vertex in hull[1:-1:3]:
        [point] = sweep(problem, [vertex.bpw])
        assert point.error == pytest.approx(vertex.error, rel=1e-9)
    for b in np.linspace(hull[0].bpw, hull[-1].bpw, 7):
        [point] = sweep(problem, [float(b)])
        assert point.error >= hull_lower_bound(hull, float(b)) * (1 - 1e-9)


def test_infeasible_budget_names_the_smallest_feasible_bpw():
    problem = random_problem(1, 5, 4)
    floor = problem.evaluate(problem.bits.argmin(axis=1)).bpw
    with pytest.raises(InfeasibleBudgetError, match=f"smallest feasible bpw is {np.ceil(floor * 1e4) / 1e4:.4f}"):
        sweep(problem, [floor - 0.5])


def test_infeasible_energy_cap_is_named():
    problem = random_problem(1, 5, 4)
    floor = problem.evaluate(problem.bits.argmin(axis=1))
    with pytest.raises(InfeasibleBudgetError, match="energy"):
        sweep(problem, [floor.bpw + 1.0], energy_j_per_token=floor.energy_j_per_token * 0.5)


def test_dominated_options_are_pruned_but_not_across_units():
    problem = random_problem(2, 4, 6, units=1)
    mask = useful_options(problem)
    for i in range(4):
        kept = np.flatnonzero(mask[i])
        b, e = problem.bits[i, kept], problem.error[i, kept]
        assert pareto_mask(np.stack([b, e], 1)).all()
        dropped = np.flatnonzero(~mask[i])  # each dropped option is dominated by a kept one
        for k in dropped:
            assert np.any((b <= problem.bits[i, k]) & (e <= problem.error[i, k]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10), st.floats(0, 10)), min_size=1, max_size=40))
def test_pareto_mask_keeps_exactly_the_undominated(rows):
    costs = np.array(rows)
    keep = pareto_mask(costs)
    for i in range(len(rows)):
        dominated = any(np.all(costs[j] <= costs[i]) and np.any(costs[j] < costs[i]) for j in range(len(rows)))
        if dominated:
            assert not keep[i]
        else:
            assert keep[i] or any(np.array_equal(costs[j], costs[i]) and keep[j] for j in range(i))
