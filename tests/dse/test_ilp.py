"""The optimizer: answers against brute force (bit, energy and area caps, both solvers), the
incremental hull against a direct construction, every budget answered, dominance."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dse import ilp
from dse.ilp import Answer, InfeasibleBudgetError, Solver, recheck, sweep
from dse.pareto import lagrangian_hull, pareto_mask, pareto_points, useful_options
from dse.problem import Problem


def random_problem(seed: int, items: int, options: int, units: int = 1, const_bits: bool = False) -> Problem:
    rng = np.random.default_rng(seed)
    numel = rng.integers(1, 5, items) * 1024
    bpw = np.sort(rng.uniform(2.0, 9.0, options))
    bits = numel[:, None] * bpw[None, :]
    sens = rng.lognormal(0, 1, items)
    error = sens[:, None] * numel[:, None] * 2.0 ** (-2 * bpw[None, :]) * rng.uniform(0.8, 1.25, (items, options))
    # energy not proportional to bits: decode energy differs per format
    energy = bits * 1e-12 * rng.uniform(0.7, 1.3, (1, options))
    unit_of = tuple(frozenset({f"u{k % units}"}) for k in range(options))
    budget_bits = bits - 32 if const_bits else None  # a per-tensor FP32 factor the budget does not count
    return Problem(tuple(f"layer.{i}" for i in range(items)), tuple(f"c{k}" for k in range(options)),
                   numel, error, bits, energy, unit_of, {f"u{j}": 0.1 * (j + 1) for j in range(units)},
                   budget_bits=budget_bits)


def brute_force(problem: Problem, bpw: float, energy: float | None = None, area: float | None = None):
    best = None
    for choice in itertools.product(range(len(problem.options)), repeat=len(problem.items)):
        p = problem.evaluate(np.array(choice))
        if p.budget_bpw > bpw * (1 + 1e-12):
            continue
        if energy is not None and p.energy_j_per_token > energy * (1 + 1e-12):
            continue
        if area is not None and p.decode_area_mm2 > area * (1 + 1e-12):
            continue
        if best is None or p.error < best.error:
            best = p
    return best


def _span(problem: Problem) -> tuple[float, float]:
    lo = problem.evaluate(problem.limit_bits.argmin(axis=1)).budget_bpw
    hi = problem.evaluate(problem.limit_bits.argmax(axis=1)).budget_bpw
    return lo, hi


def _check(problem: Problem, budget: float, solver: Solver, energy=None, area=None) -> None:
    expected = brute_force(problem, budget, energy, area)
    if expected is None:
        try:
            [answer] = sweep(problem, [budget], energy_j_per_token=energy, decode_area_mm2=area, solver=solver)
        except InfeasibleBudgetError:
            return
        assert answer.status == "infeasible" and answer.point is None
        return
    [answer] = sweep(problem, [budget], energy_j_per_token=energy, decode_area_mm2=area, solver=solver)
    p = answer.point
    assert p is not None and answer.status in ("optimal", "top")
    # the caps hold exactly when recomputed, and the error is optimal within the stated gap
    assert p.budget_bpw <= budget * (1 + 1e-12)
    if energy is not None:
        assert p.energy_j_per_token <= energy * (1 + 1e-12)
    if area is not None:
        assert p.decode_area_mm2 <= area * (1 + 1e-12)
    assert expected.error * (1 - 1e-9) <= p.error <= expected.error * (1 + solver.gap_rel) + 1e-12
    assert answer.lower <= expected.error * (1 + 1e-9)  # the stated bound is a true lower bound
    assert answer.gap <= solver.gap_rel * (1 + 1e-9)


SOLVERS = [Solver("highs"), Solver("cbc")]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 4), st.integers(2, 5), st.floats(0.05, 1.1), st.sampled_from(SOLVERS),
       st.booleans())
def test_bit_budget_equals_brute_force(seed, items, options, where, solver, const_bits):
    problem = random_problem(seed, items, options, const_bits=const_bits)
    lo, hi = _span(problem)
    _check(problem, lo + where * (hi - lo), solver)


def test_highs_claim_of_optimality_is_checked_against_its_answer(monkeypatch):
    """Found by hypothesis: given the hull's starting answer, HiGHS 1.16 with presolve returned that
    answer (error 142.89) as optimal, with an objective and bound no answer has; the optimum is 141.72."""
    problem = random_problem(4662, 4, 4)
    lo, hi = _span(problem)
    budget = lo + 0.265625 * (hi - lo)
    calls = []
    run = ilp._run_highs
    monkeypatch.setattr(ilp, "_run_highs", lambda model, solver, start, presolve=True:
                        calls.append(presolve) or run(model, solver, start, presolve))
    _check(problem, budget, Solver("highs"))
    assert calls == [True] or calls[-1] is False  # HiGHS got it right, or it was redone without presolve
    [answer] = sweep(problem, [budget], solver=Solver("highs"))
    assert answer.point is not None and answer.point.choice == (2, 1, 1, 1)
    assert answer.point.error == pytest.approx(141.71819860962592, rel=1e-12)


def test_an_inconsistent_run_without_presolve_keeps_its_answer_but_not_its_claims(monkeypatch):
    problem = random_problem(4662, 4, 4)
    lo, hi = _span(problem)
    budget = lo + 0.265625 * (hi - lo)
    monkeypatch.setattr(ilp, "_consistent", lambda *args: False)
    [answer] = sweep(problem, [budget], solver=Solver("highs"))
    exact = brute_force(problem, budget)
    # no claim survives: the bound is the Lagrangian one, far below, so the gap is stated, not hidden
    assert answer.status == "gap" and answer.point is not None
    assert answer.lower <= exact.error * (1 + 1e-9) and answer.gap > 1e-2


def _overshoot_then_infeasible(monkeypatch):
    """A problem, a budget, and a solver stand-in whose first answer ignores the bit budget (so
    it overshoots) and whose every later, tightened run is infeasible; ``calls`` logs the starts."""
    problem = random_problem(0, 4, 5)
    lo, hi = _span(problem)
    run, calls = ilp._run, []

    def overshoot_then_infeasible(model, solver, start):
        calls.append(start)
        if len(calls) == 1:
            loose = model.row_hi.copy()
            loose[model.rows["bits"]] = 1e9
            return run(replace(model, row_hi=loose), solver, start)
        return ilp._Run(None, False, True, math.inf)

    monkeypatch.setattr(ilp, "_run", overshoot_then_infeasible)
    return problem, lo + 0.5 * (hi - lo), calls


def test_an_infeasible_tightened_resolve_keeps_the_starting_answer(monkeypatch):
    """The solver's answer overshoots the budget in numpy, the tightened model is infeasible: the
    starting answer (meeting the budget) is the answer, labelled with its gap, not 'infeasible'."""
    problem, budget, calls = _overshoot_then_infeasible(monkeypatch)
    [answer] = sweep(problem, [budget], solver=Solver("highs"))
    assert len(calls) == 2 and calls[0] is not None
    expected = brute_force(problem, budget)
    assert answer.status == "gap" and answer.point is not None and answer.point.budget_bpw <= budget
    assert answer.lower <= expected.error <= answer.point.error


def test_a_budget_whose_tightened_resolves_find_nothing_says_so(monkeypatch):
    """No starting answer, the solver's answer overshoots, the tightened model is infeasible: no
    point, and the note says what happened (not "raise the time limit", which would not help)."""
    problem, budget, calls = _overshoot_then_infeasible(monkeypatch)
    monkeypatch.setattr(ilp, "_incumbent", lambda *args: None)
    [answer] = sweep(problem, [budget], solver=Solver("highs"))
    assert len(calls) == 2 and answer.status == "infeasible" and answer.point is None
    assert "tightened" in answer.note and "time_limit" not in answer.note


def test_an_answer_unlike_its_claim_is_inconsistent():
    model = ilp._Model(2, np.array([1.0, 2.0]), 0.5, None, np.zeros(0), np.zeros(0), np.zeros(2), {})
    x = np.array([0.0, 1.0])  # objective 2.5
    assert ilp._consistent(model, x, 2.5, 2.5 * (1 - 5e-5), True, 1e-4)
    assert not ilp._consistent(model, x, 2.48, 2.48, True, 1e-4)  # reported objective is not the answer's
    assert not ilp._consistent(model, x, 2.5, 2.48, True, 1e-4)  # "optimal" but 0.8 % above its bound
    assert ilp._consistent(model, x, 2.5, 2.48, False, 1e-4)  # not claimed optimal: a gap is allowed


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 5), st.integers(2, 4), st.floats(0.1, 1.0), st.floats(0.0, 1.0),
       st.sampled_from(SOLVERS))
def test_energy_cap_equals_brute_force(seed, items, options, where, tight, solver):
    problem = random_problem(seed, items, options)
    lo, hi = _span(problem)
    e_lo = problem.evaluate(problem.energy.argmin(axis=1)).energy_j_per_token
    e_hi = problem.evaluate(problem.energy.argmax(axis=1)).energy_j_per_token
    _check(problem, lo + where * (hi - lo), solver, energy=e_lo + tight * (e_hi - e_lo))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.2, 1.0), st.sampled_from([0.15, 0.35, 0.65]), st.sampled_from(SOLVERS),
       st.booleans())
# Found by hypothesis: PuLP reset the lower bound 1 of a unit a fixed item builds anyway (LpBinary
# means [0, 1]), so CBC left that unit's area out; the tightened re-solve was infeasible.
@example(seed=1126, where=0.9375, area=0.35, solver=Solver("cbc"), with_energy=False)
def test_area_and_energy_caps_equal_brute_force(seed, where, area, solver, with_energy):
    problem = random_problem(seed, 3, 4, units=3)
    lo, hi = _span(problem)
    budget = lo + where * (hi - lo)
    energy = None
    if with_energy:
        energy = problem.evaluate(problem.energy.argmin(axis=1)).energy_j_per_token * 1.15
    _check(problem, budget, solver, energy=energy, area=area)


def test_every_budget_is_answered_with_a_point_or_a_reason():
    problem = random_problem(3, 30, 12)
    lo, hi = _span(problem)
    top = problem.evaluate(problem.error.argmin(axis=1)).budget_bpw
    budgets = [lo - 0.5, lo, (lo + top) / 2, top, top + 1.0]
    answers = sweep(problem, budgets)
    assert [a.budget_bpw for a in answers] == sorted(budgets)
    assert answers[0].status == "infeasible" and "smallest feasible budget" in answers[0].note
    assert f"{math.ceil(lo * 1e4) / 1e4:.4f}" in answers[0].note
    assert all(a.point is not None for a in answers[1:])
    assert answers[-1].status == "top" and answers[-2].status == "top"
    assert answers[-1].point.error == pytest.approx(problem.error.min(axis=1).sum())


def test_a_stored_sweep_is_rechecked_not_trusted():
    """A sweep read back from the cache passes recheck as it was solved (through its JSON record);
    an answer that breaks its budget, is worse than the hull vertex within it, claims a status
    its gap does not have, or has no point where one exists does not."""
    problem = random_problem(3, 30, 12)
    lo, _ = _span(problem)
    top = problem.evaluate(problem.error.argmin(axis=1)).budget_bpw
    budgets = [lo - 0.5, (lo + top) / 2, top + 1.0]
    hull = lagrangian_hull(problem)
    answers = [Answer.from_record(problem, a.record()) for a in sweep(problem, budgets, hull=hull)]
    assert [a.status for a in answers] == ["infeasible", "optimal", "top"]

    def holds(i: int, **change) -> bool:
        edited = [replace(a, **change) if j == i else a for j, a in enumerate(answers)]
        return recheck(problem, budgets, edited, hull, gap_rel=1e-4)

    assert holds(0)
    fewest, most = (problem.evaluate(np.full(len(problem.items), k), source="ilp") for k in (0, 11))
    assert not holds(1, point=most)  # over its budget
    assert not holds(1, point=fewest)  # within it, but worse than the hull vertex there
    assert not holds(1, gap=0.5)  # "optimal" with a gap above gap_rel
    assert not holds(2, point=None, status="infeasible")  # the top budget has points
    assert not holds(0, budget_bpw=lo - 0.4)  # another budget
    assert not recheck(problem, budgets[1:], answers[1:], hull, gap_rel=1e-4, energy_j_per_token=1e-9)


def test_sweep_points_meet_budgets_and_form_a_front():
    problem = random_problem(3, 30, 12)
    budgets = list(np.linspace(3.0, 8.0, 11))
    points = [a.point for a in sweep(problem, budgets)]
    for b, p in zip(budgets, points):
        assert p.bpw <= b + 1e-9
    front = pareto_points(points)
    costs = np.array([[p.bpw, p.error] for p in front])
    assert pareto_mask(costs).all()
    assert all(np.diff(costs[:, 1]) < 0)  # more bits, strictly less error along the front


@pytest.mark.parametrize("energy", [None, 0.9])
def test_budgets_solved_side_by_side_answer_as_one_at_a_time(energy):
    """sweep solves budgets on threads; each answer is the one a sequential sweep gives."""
    problem = random_problem(11, 40, 10)
    budgets = list(np.linspace(3.0, 8.5, 12))
    cap = None if energy is None else energy * float(problem.energy.max(axis=1).sum())
    one = sweep(problem, budgets, energy_j_per_token=cap, threads=1)
    four = sweep(problem, budgets, energy_j_per_token=cap, threads=4)
    assert [a.record() for a in one] == [a.record() for a in four]
    assert sum(a.status == "optimal" for a in one) >= 4


def _hull_by_sorting_all_pairs(problem: Problem) -> np.ndarray:
    """A direct construction: the lower hull of every assignment's (bits, error), by brute force."""
    pts = np.array([[problem.evaluate(np.array(c)).budget_bpw * problem.limit_numel, problem.evaluate(np.array(c)).error]
                    for c in itertools.product(range(len(problem.options)), repeat=len(problem.items))])
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    hull: list[np.ndarray] = []
    for p in pts:
        if hull and p[1] >= hull[-1][1]:
            continue
        while len(hull) >= 2 and (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0]) >= (p[1] - hull[-2][1]) * (
                hull[-1][0] - hull[-2][0]):
            hull.pop()
        hull.append(p)
    return np.array(hull)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 4), st.integers(1, 5))
def test_incremental_hull_equals_the_hull_of_every_assignment(seed, items, options):
    problem = random_problem(seed, items, options)
    hull = lagrangian_hull(problem)
    expected = _hull_by_sorting_all_pairs(problem)
    for x, y in expected:  # every true vertex lies on the merged chain
        assert hull.bound(x) == pytest.approx(y, rel=1e-9)
    for j in range(len(hull)):  # every chain vertex is an assignment with those totals, on or above the hull
        p = problem.evaluate(hull.choice(j))
        assert p.budget_bpw * problem.limit_numel == pytest.approx(hull.x[j], rel=1e-12)
        assert p.error == pytest.approx(hull.cost[j], rel=1e-9)
        assert np.interp(hull.x[j], expected[:, 0], expected[:, 1]) == pytest.approx(hull.cost[j], rel=1e-9)


def test_hull_vertices_are_ilp_optimal_and_bound_it():
    problem = random_problem(5, 20, 8)
    hull = lagrangian_hull(problem)
    for j in range(1, len(hull) - 1, 5):
        [answer] = sweep(problem, [hull.x[j] / problem.limit_numel], hull=hull)
        assert answer.point.error == pytest.approx(hull.cost[j], rel=1e-4)
    for b in np.linspace(hull.x[0], hull.x[-1], 7) / problem.limit_numel:
        [answer] = sweep(problem, [float(b)])
        assert answer.point.error >= hull.bound(float(b) * problem.limit_numel) * (1 - 1e-9)


def test_infeasible_energy_cap_is_named():
    problem = random_problem(1, 5, 4)
    floor = problem.evaluate(problem.energy.argmin(axis=1))
    with pytest.raises(InfeasibleBudgetError, match="energy"):
        sweep(problem, [floor.bpw + 1.0], energy_j_per_token=floor.energy_j_per_token * 0.5)


def test_an_unproven_budget_keeps_its_answer_with_the_gap():
    """A time limit too short to close the gap: the answer is kept, labelled, and its bound is true."""
    problem = random_problem(7, 600, 12)
    lo, hi = _span(problem)
    [answer] = sweep(problem, [lo + 0.37 * (hi - lo)], energy_j_per_token=None,
                     solver=Solver("highs", time_limit_s=1e-3, gap_rel=1e-12))
    assert answer.point is not None and answer.status in ("gap", "optimal")
    assert answer.lower <= answer.point.error
    if answer.status == "gap":
        assert answer.point.source == "ilp-gap" and "within" in answer.note


def test_dominated_options_are_pruned_but_not_across_units():
    problem = random_problem(2, 4, 6, units=1)
    mask = useful_options(problem)
    for i in range(4):
        kept = np.flatnonzero(mask[i])
        b, e = problem.bits[i, kept], problem.error[i, kept]
        dropped = np.flatnonzero(~mask[i])  # each dropped option is dominated by a kept one
        for k in dropped:
            assert np.any((b <= problem.bits[i, k]) & (e <= problem.error[i, k]))
    assert mask.any(axis=1).all()


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


@pytest.mark.slow
def test_a_deepseek_sized_sweep_answers_every_budget():
    """45,000 items x 10 options (DeepSeek-V3 with every expert a tensor): each budget gets a point
    meeting it, proven within the gap tolerance against a bound that holds."""
    problem = random_problem(11, 45_000, 10, const_bits=True)
    hull = lagrangian_hull(problem)
    lo, hi = _span(problem)
    budgets = list(np.linspace(lo, hi, 9))
    answers = sweep(problem, budgets, hull=hull)
    for b, a in zip(budgets, answers):
        assert a.point is not None and a.status in ("optimal", "top")
        assert a.point.budget_bpw <= b * (1 + 1e-12)
        assert hull.bound(b * problem.limit_numel) <= a.point.error * (1 + 1e-12)
        assert a.point.error <= a.lower / (1 - 1e-4) * (1 + 1e-9)
