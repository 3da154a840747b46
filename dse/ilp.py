"""The multiple-choice knapsack at each bpw budget, solved to a stated, proven gap.

    min  sum_{i,k} e[i,k] x[i,k]  (+ a 1e-9 tie-break toward fewer bits)
    s.t. sum_k x[i,k] = 1                         one choice per item
         sum_{i,k} b[i,k] x[i,k] <= B * N         bit budget (on the budget basis)
         sum_{i,k} E[i,k] x[i,k] <= E_max         energy cap       (optional)
         sum_{k uses u} x[i,k] <= y[u] for all i  unit u is built if used (only with an area cap)
         sum_u A[u] y[u] <= A_max                 area cap         (optional)

(the multiple-choice knapsack of Kellerer, Pferschy & Pisinger, "Knapsack Problems", Springer
2004, ch. 11, with a fixed charge per hardware unit.)

Every capped row is scaled to a right-hand side of 1, so the solvers' absolute feasibility
tolerances (1e-6 in CBC and HiGHS) are relative ones; every answer is re-checked in numpy, and
a row it overshoots is tightened and the model solved again.

What each answer proves. A Lagrangian bound L comes first: the hull of (bits, error + mu *
energy) at B, minus mu * E_max, maximised over mu (dse.pareto; with an area cap the area row is
left out of the bound, which keeps it valid). A greedy answer U from the hull vertex under B
follows. Reduced-cost fixing then drops every option that cannot be in an answer better than U,
which leaves a few free items even at 45,000 items, and the ILP runs on those. Its answer is
proven within gap = (error - lower) / error, where lower is the larger of L and the solver's own
bound; a budget whose gap exceeds ``Solver.gap_rel`` when the time limit hits keeps its best
answer, labelled with that gap. Nothing is thrown away. A sweep read back from the cache is
re-verified by :func:`recheck` before it is used.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import re
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dse.pareto import Hull, greedy_fill, lagrangian_hull, reduced_cost_mask, useful_options
from dse.problem import Caps, Point, Problem
from quant.errors import DseError

if TYPE_CHECKING:
    import scipy.sparse as sp

TIE_BREAK = 1e-9  # per bpw, in units of the optimum's error: ties go to fewer bits


class InfeasibleBudgetError(DseError):
    """No assignment meets the budgets."""


class SolverError(DseError):
    """The solver could not be run."""


@dataclass(frozen=True)
class Solver:
    """Which MIP solver, and how long and how close each budget is solved.

    HiGHS (highspy, called directly with the model as sparse arrays) is the default on
    measurement: benchmarks/bench_ilp.py and the README's "Solvers" table. CBC (PuLP's bundled
    binary) stays selectable.
    """

    backend: str = "highs"
    """'highs' or 'cbc'."""
    time_limit_s: float = 20.0
    """Per budget; the best answer found by then is kept with its proven gap."""
    gap_rel: float = 1e-4
    """A budget counts as solved when its answer is proven this close to optimal (relative)."""

    def check(self) -> None:
        if self.backend == "highs" and importlib.util.find_spec("highspy") is None:
            raise SolverError("solver 'highs' needs the highspy package: pip install highspy")
        if self.backend not in ("highs", "cbc"):
            raise SolverError(f"unknown solver {self.backend!r}; use highs or cbc")


@dataclass(frozen=True)
class Answer:
    """What a sweep says about one requested budget."""

    budget_bpw: float
    status: str
    """'optimal' (proven within gap_rel), 'gap' (best answer, gap not closed in time), 'top' (the
    budget is at or above the largest useful one: the top point), 'infeasible' (no point)."""
    point: Point | None
    gap: float
    """Proven relative gap of ``point``'s error to the optimum (nan without a point)."""
    lower: float
    """Proven lower bound on the optimal error at this budget."""
    note: str
    """One line saying what was proven, or why there is no point."""

    def record(self) -> dict[str, Any]:
        """The answer as JSON (dse.cache.SolutionCache): the point as its source and choice; a
        missing gap or an infinite bound (no point) as null."""
        return {"budget_bpw": self.budget_bpw, "status": self.status,
                "gap": self.gap if math.isfinite(self.gap) else None,
                "lower": self.lower if math.isfinite(self.lower) else None, "note": self.note,
                "point": None if self.point is None else [self.point.source, *self.point.choice]}

    @classmethod
    def from_record(cls, problem: Problem, r: dict[str, Any]) -> Answer:
        """The inverse of :meth:`record`, with the point re-evaluated on ``problem``."""
        point = None if r["point"] is None else problem.evaluate(np.array(r["point"][1:]), source=r["point"][0])
        return cls(r["budget_bpw"], r["status"], point, math.nan if r["gap"] is None else r["gap"],
                   math.inf if r["lower"] is None else r["lower"], r["note"])


# -------------------------------------------------------------------------------------------------
# The model as arrays, and the two backends


@dataclass
class _Model:
    """An ILP over the free items: columns x (item, option) pairs, then y per unit."""

    n_x: int
    cost: np.ndarray
    """(n_cols,) objective, already scaled."""
    offset: float
    a: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_lo: np.ndarray
    rows: dict[str, int]
    """Row index of each named capped row ('bits', 'energy', 'area')."""


def _build(problem: Problem, free: np.ndarray, mask: np.ndarray, caps: Caps | None, cost: np.ndarray,
           offset: float, fixed: np.ndarray) -> tuple[_Model, np.ndarray, np.ndarray]:
    """The ILP on ``free`` items restricted to ``mask``; the other items keep ``fixed`` options.

    Returns the model and, per x column, its item (index into ``free``) and option.
    """
    sub = mask[free]
    var_item, var_opt = np.nonzero(sub)
    n_x, n_free = len(var_item), len(free)
    fixed_items = np.setdiff1d(np.arange(len(problem.items)), free)
    fixed_opts = fixed[fixed_items]
    rows_i: list[np.ndarray] = [var_item]
    cols: list[np.ndarray] = [np.arange(n_x)]
    vals: list[np.ndarray] = [np.ones(n_x)]
    lo, hi = [np.ones(n_free)], [np.ones(n_free)]
    named: dict[str, int] = {}
    n_rows = n_free
    units: list[str] = []
    fixed_units: set[str] = set()
    if caps is not None:
        def add_row(name: str, coef: np.ndarray, used: float, cap: float) -> None:
            nonlocal n_rows
            named[name] = n_rows
            rows_i.append(np.full(n_x, n_rows))
            cols.append(np.arange(n_x))
            vals.append(coef / cap)  # scaled: right-hand side ~1
            lo.append(np.array([-np.inf]))
            hi.append(np.array([(cap - used) / cap]))
            n_rows += 1

        if math.isfinite(caps.bpw):
            cap_bits = caps.bpw * problem.limit_numel
            add_row("bits", problem.limit_bits[free[var_item], var_opt],
                    float(problem.limit_bits[fixed_items, fixed_opts].sum()), cap_bits)
        if caps.energy_j_per_token is not None:
            add_row("energy", problem.energy[free[var_item], var_opt],
                    float(problem.energy[fixed_items, fixed_opts].sum()), caps.energy_j_per_token)
        if caps.decode_area_mm2 is not None:
            fixed_units = set().union(*(problem.units_of_option[k] for k in np.unique(fixed_opts)))
            units = sorted(set().union(*(problem.units_of_option[k] for k in np.unique(var_opt))))
            for j, u in enumerate(units):
                has = np.array([u in problem.units_of_option[k] for k in range(len(problem.options))])
                uses = has[var_opt]
                items_using = np.unique(var_item[uses])
                row_of = {int(it): n_rows + r for r, it in enumerate(items_using)}
                rows_i += [np.array([row_of[int(it)] for it in var_item[uses]]), np.arange(n_rows, n_rows + len(items_using))]
                cols += [np.flatnonzero(uses), np.full(len(items_using), n_x + j)]
                vals += [np.ones(int(uses.sum())), -np.ones(len(items_using))]
                lo.append(np.full(len(items_using), -np.inf))
                hi.append(np.zeros(len(items_using)))
                n_rows += len(items_using)
            named["area"] = n_rows
            area = np.array([problem.unit_area_mm2.get(u, 0.0) for u in units])
            rows_i.append(np.full(len(units), n_rows))
            cols.append(n_x + np.arange(len(units)))
            vals.append(area / caps.decode_area_mm2)
            fixed_only = fixed_units - set(units)
            used = sum(problem.unit_area_mm2.get(u, 0.0) for u in fixed_only)
            lo.append(np.array([-np.inf]))
            hi.append(np.array([(caps.decode_area_mm2 - used) / caps.decode_area_mm2]))
            n_rows += 1
    n_cols = n_x + len(units)
    import scipy.sparse as sp  # lazy: scipy costs 0.2 s at every `dse` start, and warm runs solve nothing

    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows_i), np.concatenate(cols))), shape=(n_rows, n_cols))
    col_lo = np.zeros(n_cols)
    if units:  # a unit some fixed item needs is built anyway
        col_lo[n_x:] = [1.0 if u in fixed_units else 0.0 for u in units]
    full_cost = np.concatenate([cost[free[var_item], var_opt], np.zeros(len(units))])
    model = _Model(n_x, full_cost, offset, a, np.concatenate(lo), np.concatenate(hi), col_lo, named)
    return model, var_item, var_opt


@dataclass(frozen=True)
class _Run:
    values: np.ndarray | None
    """Column values of the best answer found (None: none found)."""
    proven: bool
    """The solver says its answer is within its gap tolerance."""
    infeasible: bool
    bound: float
    """The solver's lower bound on the objective (-inf: none)."""


def _run(model: _Model, solver: Solver, start: np.ndarray | None) -> _Run:
    if solver.backend == "highs":
        return _run_highs(model, solver, start)
    return _run_cbc(model, solver, start)


@functools.cache
def _highspy():
    """highspy, imported once; its first Highs() prints a banner on fd 1 before any option can
    turn output off, which would land in the middle of dse's table: it goes to /dev/null."""
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return highspy


def _run_highs(model: _Model, solver: Solver, start: np.ndarray | None, presolve: bool = True) -> _Run:
    """One HiGHS run. Its claim is checked against its own answer: HiGHS 1.16's presolve, given a
    starting answer, can return that answer as "optimal" with an objective and bound that belong
    to no answer (once in 5,500 random MCKPs of 2-4 items checked against brute force; the
    answer was 0.8 % from the optimum). Such a run is redone without presolve, which solves it;
    were that run inconsistent too, its answer would be kept with neither its claim nor its bound."""
    highspy = _highspy()
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("presolve", "on" if presolve else "off")
    h.setOptionValue("time_limit", float(solver.time_limit_s))
    h.setOptionValue("mip_rel_gap", float(solver.gap_rel))
    # one thread: reproducible; and HiGHS's scheduler is global, so the runs sweep() starts side
    # by side must all ask for the same thread count
    h.setOptionValue("threads", 1)
    # rows are scaled to 1, so the default 1e-6 admits answers 1e-6 over a budget; re-solving
    # them tightened would lose the solver's proof for the budget as asked
    h.setOptionValue("mip_feasibility_tolerance", 1e-9)
    a = model.a.tocsc()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = a.shape[1], a.shape[0]
    lp.col_cost_ = model.cost
    lp.offset_ = model.offset
    lp.col_lower_ = model.col_lo
    lp.col_upper_ = np.ones(a.shape[1])
    lp.row_lower_ = np.where(np.isfinite(model.row_lo), model.row_lo, -highspy.kHighsInf)
    lp.row_upper_ = model.row_hi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a.indptr
    lp.a_matrix_.index_ = a.indices
    lp.a_matrix_.value_ = a.data
    lp.integrality_ = [highspy.HighsVarType.kInteger] * a.shape[1]
    h.passModel(lp)
    if start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = list(start)
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    if status == highspy.HighsModelStatus.kInfeasible:
        return _Run(None, False, True, math.inf)
    has = info.primal_solution_status == 2  # kSolutionStatusFeasible
    values = np.array(h.getSolution().col_value) if has else None
    bound = float(info.mip_dual_bound) if math.isfinite(info.mip_dual_bound) else -math.inf
    proven = status == highspy.HighsModelStatus.kOptimal
    if values is not None and not _consistent(model, values, float(info.objective_function_value), bound, proven,
                                              solver.gap_rel):
        if presolve:
            return _run_highs(model, solver, start, presolve=False)
        return _Run(values, False, False, -math.inf)  # the answer stands on its own; its claims do not
    return _Run(values, proven, False, bound)


def _consistent(model: _Model, values: np.ndarray, objective: float, bound: float, proven: bool,
                gap_rel: float) -> bool:
    """Whether a solver's answer has the objective it reports and, if called optimal, lies within
    ``gap_rel`` of its bound (slack: HiGHS's own feasibility and gap tolerances)."""
    actual = float(model.cost @ values + model.offset)
    slack = 1e-7 * max(1.0, abs(actual))
    if abs(actual - objective) > slack:
        return False
    return not proven or actual - bound <= gap_rel * abs(actual) + slack


def _run_cbc(model: _Model, solver: Solver, start: np.ndarray | None) -> _Run:
    import pulp

    prob = pulp.LpProblem("mckp", pulp.LpMinimize)
    n = model.a.shape[1]
    # LpInteger on [col_lo, 1], not LpBinary: PuLP resets a binary's bounds to [0, 1], which drops
    # the lower bound 1 of a unit a fixed item builds anyway (a 0/1 integer is written as binary)
    cols = [prob.add_variable(f"v{j}", model.col_lo[j], 1, cat=pulp.LpInteger) for j in range(n)]
    prob.setObjective(pulp.LpAffineExpression(zip(cols, model.cost.tolist()), constant=model.offset))
    a = model.a.tocsr()
    for r in range(a.shape[0]):
        s, e = a.indptr[r], a.indptr[r + 1]
        expr = pulp.LpAffineExpression(zip((cols[j] for j in a.indices[s:e]), a.data[s:e].tolist()))
        lo, hi = model.row_lo[r], model.row_hi[r]
        prob += (expr == hi) if lo == hi else (expr <= hi), f"r{r}"
    if start is not None:
        for v, x in zip(cols, start):
            v.setInitialValue(int(round(x)))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PuLP 3.3 deprecates the bundled CBC; pinned < 4
        log = Path(tmp) / "cbc.log"
        # CBC 2.10.3's preprocessing returns wrong "optimal" answers on small MCKPs (1 in 300
        # random instances against brute force); without it, none.
        cmd = pulp.PULP_CBC_CMD(msg=False, gapRel=solver.gap_rel, timeLimit=solver.time_limit_s,
                                options=["preprocess off"], warmStart=start is not None, logPath=str(log))
        status = prob.solve(cmd)
        text = log.read_text()
    if pulp.LpStatus[status] == "Infeasible":
        return _Run(None, False, True, math.inf)
    found = prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)
    values = np.array([v.value() or 0.0 for v in cols]) if found else None
    proven = prob.sol_status == pulp.LpSolutionOptimal
    m = re.search(r"^Lower bound:\s+(\S+)", text, re.M)
    if m:
        bound = float(m.group(1))
    elif proven and values is not None:  # CBC prints no bound when it closes its gap tolerance
        obj = float(model.cost @ values + model.offset)
        bound = obj - solver.gap_rel * abs(obj)
    else:
        bound = -math.inf
    return _Run(values, proven, False, bound)


# -------------------------------------------------------------------------------------------------
# Bounds and incumbents


@dataclass
class _Bounds:
    """Lagrangian hulls of one sweep, cached by energy multiplier mu."""

    problem: Problem
    mask: np.ndarray
    hulls: dict[float, Hull]

    def hull(self, mu: float) -> Hull:
        if mu not in self.hulls:
            self.hulls[mu] = lagrangian_hull(self.problem, mu, self.mask)
        return self.hulls[mu]

    def best(self, bits: float, energy_cap: float | None) -> tuple[float, Hull]:
        """max over mu >= 0 of hull_mu(bits) - mu * energy_cap: the Lagrangian bound, and its hull.

        Concave in mu: a log-spaced scan, then a golden-section refinement between its neighbours;
        each trial mu is scored by a bisection on lambda (O(n K) a step), and only the best mu
        gets its hull. Any (lambda, mu) >= 0 gives a valid bound, so a loose search only loosens it.
        """
        base = self.hull(0.0)
        if energy_cap is None:
            return base.bound(bits), base
        p = self.problem
        err = np.where(self.mask, p.error, np.inf)
        lam_ref = max(base.multiplier(bits), float(base.slope[0]) * 1e-9 if len(base.slope) else 1e-300, 1e-300)

        def value(mu: float) -> float:
            cost = err + mu * p.energy
            lo, hi = math.log(lam_ref) - 14, math.log(lam_ref) + 14
            phi = lambda lam: float((cost + lam * p.limit_bits).min(axis=1).sum() - lam * bits)  # noqa: E731
            for _ in range(25):  # the subgradient sum(b at the argmin) - bits decreases in lambda
                mid = (lo + hi) / 2
                k = (cost + math.exp(mid) * p.limit_bits).argmin(axis=1)
                if p.limit_bits[np.arange(len(k)), k].sum() > bits:
                    lo = mid
                else:
                    hi = mid
            return max(phi(0.0), phi(math.exp(lo)), phi(math.exp(hi))) - mu * energy_cap

        ref = max(abs(base.cost[-1]), 1e-300) / energy_cap  # error per J/token at the scale of the front
        grid = [0.0] + [ref * 10.0**q for q in np.arange(-6, 4.5, 1.0)]
        scores = [value(m) for m in grid]
        j = int(np.argmax(scores))
        lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
        g = (math.sqrt(5) - 1) / 2
        tried = dict(zip(grid, scores))
        for _ in range(12):
            a, b = hi - g * (hi - lo), lo + g * (hi - lo)
            tried.setdefault(a, value(a))
            tried.setdefault(b, value(b))
            if tried[a] >= tried[b]:
                hi = b
            else:
                lo = a
        mu = max(tried, key=tried.__getitem__)
        hull = self.hull(mu)
        return max(hull.bound(bits) - mu * energy_cap, base.bound(bits) if mu == 0 else -math.inf), hull


def _incumbent(problem: Problem, hull: Hull, caps: Caps, mask: np.ndarray) -> np.ndarray | None:
    """A good answer meeting every cap: the last hull vertex within them, greedily filled (with an
    area cap, only with options that need no hardware unit the vertex does not already build)."""
    bits = caps.bpw * problem.limit_numel
    ok = hull.x <= bits * (1 + 1e-12)  # the tolerance _overshoot allows: float noise in summing bits
    if caps.energy_j_per_token is not None:
        ok &= hull.energy <= caps.energy_j_per_token * (1 + 1e-12)
    js = np.flatnonzero(ok)
    if not len(js):
        return None
    choice = hull.choice(int(js[-1]))
    options = None
    if caps.decode_area_mm2 is not None:
        built = set().union(*(problem.units_of_option[k] for k in np.unique(choice)))
        options = np.array([u <= built for u in problem.units_of_option])
    choice = greedy_fill(problem, choice, bits, mask, caps.energy_j_per_token, options)
    return choice if _meets(problem.evaluate(choice), caps, problem) else None


def _meets(p: Point, caps: Caps, problem: Problem, rel: float = 1e-12) -> bool:
    return not _overshoot(p, caps, problem, rel)


def _overshoot(p: Point, caps: Caps, problem: Problem, rel: float = 1e-12) -> dict[str, float]:
    """Rows the answer exceeds, with the excess (scaled to the cap), recomputed in numpy."""
    out = {}
    if math.isfinite(caps.bpw) and p.budget_bpw > caps.bpw * (1 + rel):
        out["bits"] = p.budget_bpw / caps.bpw - 1
    if caps.energy_j_per_token is not None and p.energy_j_per_token > caps.energy_j_per_token * (1 + rel):
        out["energy"] = p.energy_j_per_token / caps.energy_j_per_token - 1
    if caps.decode_area_mm2 is not None and p.decode_area_mm2 > caps.decode_area_mm2 * (1 + rel):
        out["area"] = p.decode_area_mm2 / caps.decode_area_mm2 - 1
    return out


# -------------------------------------------------------------------------------------------------
# Solving one budget


@dataclass(frozen=True)
class _Solved:
    choice: np.ndarray | None
    lower: float
    """Proven lower bound on the objective's error part over every answer meeting the caps."""
    infeasible: bool = False
    proven: bool = False
    """The solver proved ``choice`` within its gap tolerance (CBC states no bound when it does)."""
    overshot: bool = False
    """The solver's answers broke a cap when recomputed, and tightening found none within it."""


def _solve_capped(problem: Problem, caps: Caps, solver: Solver, mask: np.ndarray, cost: np.ndarray,
                  start: np.ndarray | None, upper: float, lower: float, scale: float) -> _Solved:
    """min cost under ``caps`` with the options in ``mask`` (reduced-cost fixing already applied:
    every answer with cost < ``upper`` is inside ``mask``). Rows the answer overshoots are
    tightened and the model solved again."""
    n_items = len(problem.items)
    mask = useful_options(problem, mask)
    free = np.flatnonzero(mask.sum(axis=1) > 1)
    fixed = np.argmax(mask, axis=1)  # the only option left to a fixed item
    if not len(free):
        choice = fixed
        ok = _meets(problem.evaluate(choice), caps, problem)
        return _Solved(choice if ok else None, float(cost[np.arange(n_items), choice].sum()) if ok else upper,
                       infeasible=not ok and not math.isfinite(upper), proven=ok)
    rows = np.arange(n_items)
    fixed_items = np.setdiff1d(rows, free)
    offset = float(cost[fixed_items, fixed[fixed_items]].sum()) / scale
    tie_cost = cost / scale + TIE_BREAK * problem.limit_bits / problem.limit_numel
    model, var_item, var_opt = _build(problem, free, mask, caps, np.where(mask, tie_cost, 0.0), offset, fixed)
    tie_max = TIE_BREAK * float(np.where(mask, problem.limit_bits, 0).max(axis=1).sum()) / problem.limit_numel
    warm = None
    if start is not None:
        warm = np.zeros(model.a.shape[1])
        warm[: model.n_x] = start[free[var_item]] == var_opt
        if model.n_x < len(warm):  # units the warm start uses
            warm[model.n_x:] = 1.0
    best: np.ndarray | None = None
    bound = -math.inf
    proven = False
    infeasible = tightened = False
    for attempt in range(5):
        run = _run(model, solver, warm)
        if attempt == 0:  # a tightened model's bound says nothing about the original one
            bound = (run.bound - tie_max) * scale  # infeasible: inf, nothing better than upper
            infeasible = run.infeasible
        if run.values is None:  # infeasible, or nothing found: the starting answer still stands
            break
        choice = fixed.copy()
        x = run.values[: model.n_x]
        pick = np.full(len(free), -1)
        order = np.argsort(x, kind="stable")  # per item, the largest x wins
        pick[var_item[order]] = var_opt[order]
        choice[free] = pick
        over = _overshoot(problem.evaluate(choice), caps, problem)
        if not over:
            best, proven = choice, run.proven and attempt == 0
            break
        for name, excess in over.items():  # beyond the solver's tolerance, growing each time
            r = model.rows[name]
            model.row_hi[r] = model.row_hi[r] - 2 * excess - 1e-7 * 10**attempt
        warm, tightened = None, True
    # every answer better than upper lies inside the mask, so the restricted bound holds up to upper
    lower_err = max(lower, min(upper, bound))
    if start is not None and (best is None or cost[rows, start].sum() < cost[rows, best].sum()):
        best, proven = start, False
    return _Solved(best, lower_err, infeasible=best is None and infeasible, proven=proven,
                   overshot=best is None and tightened)


def _answer_note(status: str, gap: float, solver: Solver) -> str:
    if status == "optimal":
        return f"optimal within {solver.gap_rel:g} (proven gap {gap:.2g})"
    return (f"not proven optimal in {solver.time_limit_s:g} s: within {gap:.3%} of the optimum "
            "(raise solver.time_limit_s or solver.gap_rel)")


def sweep(problem: Problem, budgets_bpw: list[float], *, energy_j_per_token: float | None = None,
          decode_area_mm2: float | None = None, solver: Solver | None = None,
          hull: Hull | None = None, threads: int | None = None) -> list[Answer]:
    """One :class:`Answer` per budget (ascending); every budget gets a point or a reason.

    ``hull``: the problem's plain Lagrangian hull, if the caller has it (it is computed once).
    ``threads``: budgets solved at once (None: one per core).
    Raises InfeasibleBudgetError only when the energy/area caps alone admit no assignment.
    """
    solver = solver or Solver()
    solver.check()
    mask = problem.allowed
    bounds = _Bounds(problem, mask, {} if hull is None else {0.0: hull})
    n = problem.limit_numel
    capped = energy_j_per_token is not None or decode_area_mm2 is not None
    other = Caps(math.inf, energy_j_per_token, decode_area_mm2)
    scale0 = max(abs(bounds.hull(0.0).cost[-1]), float(np.where(mask, problem.error, 0).max()) * 1e-6, 1e-300)

    # the smallest feasible budget, and what binds
    fewest = float(np.where(mask, problem.limit_bits, np.inf).min(axis=1).sum())
    floor, why = fewest / n, "every tensor at its fewest-bit candidate"
    everything = float(np.where(mask, problem.limit_bits, 0.0).max(axis=1).sum()) / n  # every option fits
    if capped:
        which = " and ".join(w for w, c in (("energy", energy_j_per_token), ("area", decode_area_mm2)) if c)
        # fewest bits under the other caps: the same machinery with the bits as the error
        as_bits = replace(problem, error=np.where(mask, problem.limit_bits, np.inf))
        least = _solve_budget(as_bits, replace(other, bpw=everything), solver,
                              _Bounds(as_bits, mask, {}), mask, fewest)
        if least.point is None:
            raise InfeasibleBudgetError(f"no assignment meets the {which} cap; relax "
                                        "budgets.energy_j_per_token_max / decode_area_mm2_max")
        if least.lower > fewest * (1 + 1e-12):
            floor, why = least.lower / n, f"under the {which} cap"  # a proven bound: below it nothing fits
    # the top point: least error (then fewest bits) under the other caps; no larger budget helps
    if not capped:
        top = problem.evaluate(bounds.hull(0.0).choice(len(bounds.hull(0.0)) - 1), source="top")
        top_proven = True
    else:
        best = _solve_budget(problem, replace(other, bpw=everything), solver, bounds, mask, scale0)
        top_proven = best.status == "optimal"
        top = replace(best.point, source="top") if best.point is not None else None
    decided: list[Answer | Caps] = []  # an answer known without solving, or the caps to solve at
    for budget in sorted(budgets_bpw):
        if budget < floor * (1 - 1e-12):
            shown = math.ceil(floor * 1e4) / 1e4  # rounded up: the number quoted is itself feasible
            decided.append(Answer(budget, "infeasible", None, math.nan, math.inf,
                                  f"below the smallest feasible budget {shown:.4f} bpw ({why})"))
        elif top is not None and top_proven and budget >= top.budget_bpw:
            decided.append(Answer(budget, "top", replace(top, source="top"), 0.0, top.error,
                                  f"at or above the largest useful budget {top.budget_bpw:.4f} bpw: the top point"))
        else:
            decided.append(Caps(budget, energy_j_per_token, decode_area_mm2))
    to_solve = [d for d in decided if isinstance(d, Caps)]

    def solve(caps: Caps) -> Answer:
        return _solve_budget(problem, caps, solver, bounds, mask, scale0)

    # Budgets are independent and HiGHS runs single-threaded outside the GIL: one thread per
    # core solves them side by side (never more: each run has a wall-clock time limit). Hulls are
    # cached by mu, a pure function of it, so the answers do not depend on the order. CBC stays
    # sequential: its call swaps the process-wide warning filters (catch_warnings is not thread-safe).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = 1 if solver.backend == "cbc" else min(len(to_solve), threads or cores, cores)
    if workers <= 1:
        solved = list(map(solve, to_solve))
    else:
        _highspy()  # its one-time banner redirect of fd 1 must not race
        with ThreadPoolExecutor(max_workers=workers) as pool:
            solved = list(pool.map(solve, to_solve))
    answers = iter(solved)  # in budget order, as to_solve
    return [next(answers) if isinstance(d, Caps) else d for d in decided]


def _solve_budget(problem: Problem, caps: Caps, solver: Solver, bounds: _Bounds, mask: np.ndarray,
                  scale0: float) -> Answer:
    """One budget: the Lagrangian bound, a starting answer, reduced-cost fixing, then the ILP if needed."""
    bits = caps.bpw * problem.limit_numel
    lower, hull = bounds.best(bits, caps.energy_j_per_token)
    start = _incumbent(problem, hull, caps, mask)
    upper = problem.evaluate(start).error if start is not None else math.inf
    if start is not None and upper - lower <= solver.gap_rel * upper:  # the hull already proves it
        point = replace(problem.evaluate(start), source="ilp")
        gap = float(max(0.0, (upper - lower) / upper)) if upper > 0 else 0.0
        return Answer(caps.bpw, "optimal", point, gap, min(lower, upper), _answer_note("optimal", gap, solver))
    reduced = mask
    if start is not None and math.isfinite(lower):
        reduced = reduced_cost_mask(problem, hull, bits, mask, upper - lower + 1e-9 * max(abs(upper), abs(lower)))
    scale = lower if math.isfinite(lower) and lower > 0 else scale0  # objective ~1 at the optimum
    solved = _solve_capped(problem, caps, solver, reduced, np.where(mask, problem.error, 0.0), start, upper,
                           lower, scale)
    if solved.choice is None:
        why = ("no assignment meets every cap at this budget" if solved.infeasible else
               "the solver's answers broke a cap by its rounding tolerance when recomputed, and with the cap "
               "tightened it found none within it (relax the budget or cap slightly)" if solved.overshot else
               f"no answer found in {solver.time_limit_s:g} s (raise solver.time_limit_s)")
        return Answer(caps.bpw, "infeasible", None, math.nan, solved.lower, why)
    point = problem.evaluate(solved.choice)
    lower_err = min(solved.lower, point.error)
    gap = (point.error - lower_err) / point.error if point.error > 0 else 0.0
    if solved.proven:
        gap = min(gap, solver.gap_rel)
    status = "optimal" if gap <= solver.gap_rel * (1 + 1e-9) else "gap"
    point = replace(point, source="ilp" if status == "optimal" else "ilp-gap")
    return Answer(caps.bpw, status, point, float(gap), float(lower_err), _answer_note(status, gap, solver))


_SOURCE = {"optimal": "ilp", "gap": "ilp-gap", "top": "top"}


def recheck(problem: Problem, budgets_bpw: list[float], answers: list[Answer], hull: Hull, *, gap_rel: float,
            energy_j_per_token: float | None = None, decode_area_mm2: float | None = None) -> bool:
    """Whether stored answers hold for ``problem`` (``hull``: its plain Lagrangian hull).

    A cached sweep is re-verified, never trusted as it is: one answer per budget (ascending);
    each point within its caps, recomputed in numpy; its error inside the Lagrangian bracket (not
    below the hull's bound, and without energy/area caps not above the hull vertex within the
    budget, which the sweep's own starting answer reaches); its status agreeing with its gap. A
    budget without a point must, without caps, lie below every item's fewest bits (with caps the
    claim rests on the solver's proof, as it did when solved).
    """
    if [a.budget_bpw for a in answers] != sorted(budgets_bpw):
        return False
    capped = energy_j_per_token is not None or decode_area_mm2 is not None
    tol = 1e-9 * max(abs(float(hull.cost[0])), 1e-300)  # float noise on the scale of the front's errors
    for a in answers:
        bits = a.budget_bpw * problem.limit_numel
        if a.point is None:
            if a.status != "infeasible" or (not capped and hull.below(bits) >= 0):
                return False
            continue
        p = a.point
        if (_SOURCE.get(a.status) != p.source or not math.isfinite(p.error) or not a.gap >= 0
                or (a.status == "optimal" and a.gap > gap_rel * (1 + 1e-9)) or (a.status == "gap" and a.gap <= gap_rel)
                or _overshoot(p, Caps(a.budget_bpw, energy_j_per_token, decode_area_mm2), problem)
                or p.error < hull.bound(bits) - tol or a.lower > p.error + tol):
            return False
        if not capped and p.error > hull.cost[hull.below(bits)] + tol:
            return False
    return True
