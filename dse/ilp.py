"""The multiple-choice knapsack as a PuLP integer program, written the way the math reads.

    min  sum_{i,k} e[i,k] x[i,k]  (+ a 1e-9 tie-break toward fewer bits)
    s.t. sum_k x[i,k] = 1                        one_choice_<item>
         sum_{i,k} b[i,k] x[i,k] <= B * N        bit_budget
         sum_{i,k} E[i,k] x[i,k] <= E_max        energy_budget      (optional)
         sum_{k uses u} x[i,k] <= y[u] for all i  uses_<unit>_<item> (only with an area cap)
         sum_u A[u] y[u] <= A_max                area_budget        (optional)

(the multiple-choice knapsack of Kellerer, Pferschy & Pisinger, "Knapsack Problems", Springer 2004,
ch. 11, with a fixed charge per hardware unit). CBC from the PuLP 3.x bundle by default, HiGHS when ``highspy`` is
installed. Every solve's status is checked, its assignment re-verified against the budgets in
numpy, and its error compared with the Lagrangian hull bound (PuLP issue #492: an "Optimal"
that is not).
"""

from __future__ import annotations

import importlib.util
import math
import re
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pulp

from dse.pareto import greedy_fill, hull_lower_bound, lagrangian_front, reduced_cost_mask, useful_options
from dse.problem import Caps, Point, Problem
from quant.errors import DseError

GAP_REL = 1e-6  # set explicitly: CBC and HiGHS defaults accept different small gaps (§2.2)
# A solve stopped by its time limit is kept only if the Lagrangian bound proves it this close
# to optimal (Llama-3.1-8B at 5.25 bpw: neither CBC nor HiGHS closes 1e-6 in 30 s, the
# incumbent is within 4e-4 of the bound).
CERTIFY_GAP = 1e-3
TIE_BREAK = 1e-9


class InfeasibleBudgetError(DseError):
    """No assignment meets the budgets."""


class SolverError(DseError):
    """The solver did not return a verified optimum."""


@dataclass(frozen=True)
class Solver:
    backend: str = "cbc"
    """'cbc' (PuLP's bundled CBC, the default) or 'highs' (needs ``pip install highspy``).

    CBC is the default on measurement: on the 224 x 30 benchmark a 50-point sweep took 7.9 s
    with CBC and 30 s with HiGHS 1.16 through PuLP 3.3.2, and that pairing reported an
    infeasible model as solved (our checks catch it: every answer is re-verified).
    """
    time_limit_s: float = 60.0

    def make(self) -> pulp.LpSolver:
        if self.backend == "highs":
            if importlib.util.find_spec("highspy") is None:
                raise SolverError("solver 'highs' needs the highspy package: pip install highspy")
            return pulp.HiGHS(msg=False, gapRel=GAP_REL, timeLimit=self.time_limit_s)
        if self.backend != "cbc":
            raise SolverError(f"unknown solver {self.backend!r}; use cbc or highs")
        with warnings.catch_warnings():  # PuLP 3.3 deprecates the bundled CBC; we pin pulp < 4
            warnings.simplefilter("ignore", DeprecationWarning)
            # CBC 2.10.3's presolve returns wrong "optimal" answers on small MCKPs (found by
            # tests/dse/test_ilp.py against brute force: 1 in 300 random instances); without it: none.
            return pulp.PULP_CBC_CMD(msg=False, gapRel=GAP_REL, timeLimit=self.time_limit_s,
                                     options=["preprocess off"], warmStart=True)


def _row_name(prefix: str, name: str, used: set[str]) -> str:
    """A PuLP-safe, unique row name (PuLP silently maps illegal characters to '_', issue #87)."""
    base = f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
    out, n = base, 1
    while out in used:
        n += 1
        out = f"{base}_{n}"
    used.add(out)
    return out


@dataclass
class Mckp:
    """A built PuLP model plus the maps back to items and options."""

    prob: pulp.LpProblem
    x: dict[tuple[int, int], pulp.LpVariable]
    problem: Problem


def build_mckp(problem: Problem, caps: Caps, mask: np.ndarray | None = None,
               error_scale: float | None = None) -> Mckp:
    """The PuLP model for ``problem`` under ``caps``; ``mask`` restricts the options per item.

    ``error_scale`` should be near the optimum (e.g. the hull bound at the budget): the
    objective is then O(1), which CBC's absolute tolerances (~1e-5) need to be relative ones.
    """
    mask = problem.allowed if mask is None else mask
    prob = pulp.LpProblem("mckp", pulp.LpMinimize)
    x = {(i, k): prob.add_variable(f"x_{i}_{k}", 0, 1, cat=pulp.LpBinary) for i, k in zip(*np.nonzero(mask))}
    model = Mckp(prob, x, problem)
    set_objective(model, error_scale or float(np.max(problem.error[mask])) or 1.0)
    n = problem.total_numel
    used: set[str] = set()
    by_item: dict[int, list[tuple[int, pulp.LpVariable]]] = {}
    for (i, k), v in x.items():
        by_item.setdefault(i, []).append((k, v))
    for i, opts in by_item.items():
        prob += pulp.lpSum(v for _, v in opts) == 1, _row_name("one_choice", problem.items[i], used)
    prob += pulp.lpSum(problem.bits[i, k] / n * v for (i, k), v in x.items()) <= caps.bpw, "bit_budget"
    if caps.energy_j_per_token is not None:
        prob += (pulp.lpSum(problem.energy[i, k] * v for (i, k), v in x.items())
                 <= caps.energy_j_per_token, "energy_budget")
    if caps.decode_area_mm2 is not None:
        units = sorted(set().union(*(problem.units_of_option[k] for _, k in x)))
        y = {u: prob.add_variable(f"y_{j}", 0, 1, cat=pulp.LpBinary) for j, u in enumerate(units)}
        for i, opts in by_item.items():
            for j, u in enumerate(units):
                members = [v for k, v in opts if u in problem.units_of_option[k]]
                if members:
                    prob += pulp.lpSum(members) <= y[u], _row_name(f"uses_{j}", problem.items[i], used)
        prob += pulp.lpSum(problem.unit_area_mm2.get(u, 0.0) * y[u] for u in units) <= caps.decode_area_mm2, \
            "area_budget"
    return model


def set_objective(model: Mckp, error_scale: float) -> None:
    """min sum e/error_scale x + a 1e-9 tie-break toward fewer bits (ties then cost less)."""
    p, n = model.problem, model.problem.total_numel
    model.prob.setObjective(pulp.lpSum(
        (p.error[i, k] / error_scale + TIE_BREAK * p.bits[i, k] / n) * v for (i, k), v in model.x.items()
    ))


def solve(model: Mckp, solver: Solver, *, accept_feasible: bool = False) -> np.ndarray:
    """Solve ``model``; returns the chosen option per item.

    Raises SolverError unless proven optimal, or, with ``accept_feasible``, at least feasible
    (a time-limited incumbent, which the caller must certify).
    """
    status = model.prob.solve(solver.make())
    if pulp.LpStatus[status] == "Infeasible":
        raise InfeasibleBudgetError("no assignment meets the budgets")
    ok = {pulp.LpSolutionOptimal} | ({pulp.LpSolutionIntegerFeasible} if accept_feasible else set())
    if pulp.LpStatus[status] != "Optimal" or model.prob.sol_status not in ok:
        raise SolverError(
            f"solver stopped with status {pulp.LpStatus[status]} (solution status {model.prob.sol_status}); "
            "raise solver.time_limit_s or relax the budgets"
        )
    choice = np.full(len(model.problem.items), -1)
    for (i, k), v in model.x.items():
        if v.value() is not None and v.value() > 0.5:
            choice[i] = k
    if np.any(choice < 0):
        raise SolverError("solver returned an incomplete assignment")
    return choice


def min_feasible_bpw(problem: Problem, caps: Caps, solver: Solver) -> tuple[float, str]:
    """The smallest bpw any assignment reaches under the other caps, and what binds."""
    fewest = problem.bits.copy()
    fewest[~problem.allowed] = np.inf
    floor_bpw = float(fewest.min(axis=1).sum() / problem.total_numel)
    if caps.energy_j_per_token is None and caps.decode_area_mm2 is None:
        return floor_bpw, "every tensor at its fewest-bit candidate"
    # min bits subject to the other caps: same model, bits as the objective
    model = build_mckp(problem, Caps(bpw=float(problem.bits.max()), energy_j_per_token=caps.energy_j_per_token,
                                     decode_area_mm2=caps.decode_area_mm2))
    model.prob.setObjective(pulp.lpSum(problem.bits[i, k] / problem.total_numel * v for (i, k), v in model.x.items()))
    try:
        choice = solve(model, solver)
    except InfeasibleBudgetError:
        return float("inf"), "the energy/area caps alone (no assignment meets them)"
    bpw = problem.evaluate(choice).bpw
    which = [name for name, cap in (("energy", caps.energy_j_per_token), ("area", caps.decode_area_mm2)) if cap is not None]
    return bpw, f"under the {' and '.join(which)} cap" if bpw > floor_bpw + 1e-12 else "every tensor at its fewest-bit candidate"


def sweep(problem: Problem, budgets_bpw: list[float], *, energy_j_per_token: float | None = None,
          decode_area_mm2: float | None = None, solver: Solver | None = None) -> list[Point]:
    """The optimal assignment at each bpw budget (ascending). Infeasible budgets raise first."""
    solver = solver or Solver()
    caps = [Caps(b, energy_j_per_token, decode_area_mm2) for b in sorted(budgets_bpw)]
    smallest, why = min_feasible_bpw(problem, caps[0], solver)
    if caps[0].bpw < smallest - 1e-12:
        if not math.isfinite(smallest):
            raise InfeasibleBudgetError(f"no assignment meets {why}; relax budgets.energy_j_per_token_max / "
                                        "decode_area_mm2_max")
        feasible = math.ceil(smallest * 1e4) / 1e4  # rounded up: the number quoted is itself feasible
        raise InfeasibleBudgetError(
            f"budget {caps[0].bpw:g} bpw is infeasible: the smallest feasible bpw is {feasible:.4f} ({why}); "
            "raise budgets.bpw"
        )
    mask = useful_options(problem)
    front = lagrangian_front(problem)
    bits_only = energy_j_per_token is None and decode_area_mm2 is None
    model = None if bits_only else build_mckp(problem, caps[0], mask)
    points = []
    for cap in caps:
        bound = hull_lower_bound(front, cap.bpw) if bits_only else float("nan")
        if bits_only:  # a small model per budget: only options that can still be optimal there
            scale = bound if np.isfinite(bound) and bound > 0 else None  # objective ~1 at the optimum
            reduced = reduced_cost_mask(problem, front, cap.bpw, mask)
            model = build_mckp(problem, cap, reduced, error_scale=scale)
            start = greedy_fill(problem, front, cap.bpw, reduced)
            for (i, k), v in model.x.items():  # CBC warm start: a near-optimal incumbent from the outset
                v.setInitialValue(1 if start[i] == k else 0)
        assert model is not None
        point = _solve_within(model, cap, solver, certify_with=bound)
        _verify(point, cap, front, problem)
        points.append(point)
    return points


def _solve_within(model: Mckp, cap: Caps, solver: Solver, certify_with: float = float("nan")) -> Point:
    """Solve at ``cap``; a solver may overshoot a row within its feasibility tolerance (~1e-6),
    so on an overshoot the row is tightened past that tolerance and the model solved again.

    A time-limited incumbent is kept when the lower bound ``certify_with`` proves it within
    CERTIFY_GAP of optimal; its point is labelled 'ilp-bounded'.
    """
    rhs = cap.bpw
    certify = np.isfinite(certify_with) and certify_with > 0
    for attempt in range(4):
        model.prob.get_constraint_by_name("bit_budget").changeRHS(rhs)
        point = model.problem.evaluate(solve(model, solver, accept_feasible=certify))
        if model.prob.sol_status != pulp.LpSolutionOptimal:
            gap = (point.error - certify_with) / certify_with
            if gap > CERTIFY_GAP:
                raise SolverError(
                    f"solver hit its time limit at {cap.bpw} bpw with an answer {gap:.2%} above the "
                    "Lagrangian bound; raise solver.time_limit_s"
                )
            point = replace(point, source="ilp-bounded")
        excess = point.bpw - cap.bpw
        if excess <= 1e-12 * cap.bpw:  # float noise in summing bits: on the budget, not over it
            return point
        rhs -= 2 * excess + cap.bpw * 1e-6 * 10**attempt
    return point  # _verify reports the overshoot


def _verify(point: Point, cap: Caps, front: list[Point], problem: Problem) -> None:
    """Re-check the budgets in numpy and the error against the Lagrangian bracket."""
    tol = 1e-9
    if point.bpw > cap.bpw + tol:
        raise SolverError(f"solver answer uses {point.bpw:.6f} bpw > budget {cap.bpw}")
    if cap.energy_j_per_token is not None and point.energy_j_per_token > cap.energy_j_per_token * (1 + tol):
        raise SolverError("solver answer exceeds the energy budget")
    if cap.energy_j_per_token is None and cap.decode_area_mm2 is None:
        lower = hull_lower_bound(front, cap.bpw)
        feasible_hull = [p.error for p in front if p.bpw <= cap.bpw + tol]
        upper = min(feasible_hull) if feasible_hull else np.inf
        scale = max(abs(upper), abs(lower), 1e-300) if np.isfinite(upper) else 1.0
        if point.error < lower - 1e-6 * scale or point.error > upper + 1e-6 * scale:
            raise SolverError(
                f"solver optimum {point.error:.6g} at {cap.bpw} bpw lies outside the Lagrangian bracket "
                f"[{lower:.6g}, {upper:.6g}]"
            )


def recheck(problem: Problem, budgets_bpw: list[float], points: list[Point], *,
            energy_j_per_token: float | None = None, decode_area_mm2: float | None = None) -> bool:
    """Whether stored sweep answers hold for ``problem``: one per budget (ascending), each with a
    finite error, within its budgets and inside the Lagrangian bracket. A cached sweep is
    re-verified like a fresh one, never trusted as it is."""
    if len(points) != len(budgets_bpw):
        return False
    front = lagrangian_front(problem)
    for point, bpw in zip(points, sorted(budgets_bpw)):
        cap = Caps(bpw, energy_j_per_token, decode_area_mm2)
        if not point.source.startswith("ilp") or not math.isfinite(point.error) or (
                decode_area_mm2 is not None and point.decode_area_mm2 > decode_area_mm2 * (1 + 1e-9)):
            return False
        try:
            _verify(point, cap, front, problem)
        except SolverError:
            return False
    return True
