"""The exploration pipeline: validate -> build -> measure -> allocate, each step one call.

Library API (the CLI is a thin layer over it; :mod:`dse.api` re-exports it)::

    import dse
    result = dse.explore(dse.load_scenario("scenarios/edge.yaml"))
    result.front_frame()          # one row per front point: bpw, error, energy_j_per_token, ...
    result.measurements           # one row per (tensor, candidate)

Files are written by :func:`dse.report.write_outputs`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd

from dse.allocation import BudgetRow, FrontPoint, baselines, build_problem, solve_front
from dse.executor import open_executor
from dse.fit import fit_to_hardware
from dse.measurement import measure_table
from dse.output import can_validate, flag_and_filter, output_table, validate
from dse.render import pyplot
from dse.scenario import Scenario, ScenarioError
from dse.setup import Tensor, setup


@dataclass(frozen=True)
class ExploreResult:
    scenario: Scenario
    tensors: tuple[Tensor, ...]
    measurements: pd.DataFrame
    """One row per (tensor, candidate): ``tensor``, ``candidate``, ``role``, ``layer``, ``numel``,
    ``bpw`` [bit/weight], ``total_bits`` [bit], ``error`` (the scenario's metric), ``sse``,
    ``rel_mse``, ``sqnr_db``, ``cos_deficit_ppm``, ``act_sse``, ``acos_deficit_ppm``,
    ``second_grid_fraction``, ``sparse_entries``, ``prequantized`` (what ``measurements.csv`` holds)."""
    front: tuple[FrontPoint, ...]
    budgets: tuple[BudgetRow, ...]
    """One row per requested budget, ascending: its point, or why there is none."""
    baselines: tuple[FrontPoint, ...]
    """Each candidate applied to every tensor (where it applies to all)."""
    skipped_sources: tuple[str, ...]
    dominated: tuple[FrontPoint, ...] = ()
    """Validated points that measured worse than a cheaper point: reported, not exported."""
    excluded: tuple[str, ...] = ()
    """Candidates left out because their LUT does not fit a layer's LUT SRAM, with what they need."""

    def front_frame(self, *, uniform: bool = False) -> pd.DataFrame:
        """The front as a table, one row per point, by increasing bpw.

        Columns: ``bpw`` [bit/weight, stored], ``bpw_streamed`` [bit per weight read per token],
        ``bpw_budgeted`` [bit/weight, what a budget compares with], ``gap`` (proven distance above
        the optimum, relative), ``error`` (the scenario's metric, summed over tensors),
        ``energy_j_per_token`` [J], ``tokens_per_s`` [1/s, memory-bound], ``bytes_per_token`` [B],
        ``decode_area_mm2`` [mm²], ``point`` (ilp, ilp-gap, top, hull or uniform), ``budget_bpw`` [bit/weight,
        the requested budget of an ilp point], ``formats`` (candidate: tensor count). With
        ``uniform`` the uniform baselines follow the front.
        """
        points = list(self.front) + (list(self.baselines) if uniform else [])
        return pd.DataFrame([{
            "bpw": p.bpw, "bpw_streamed": p.bpw_streamed, "bpw_budgeted": p.bpw_budgeted, "gap": p.gap,
            "error": p.error, "energy_j_per_token": p.energy_j_per_token,
            "tokens_per_s": p.tokens_per_s, "bytes_per_token": p.bytes_per_token,
            "decode_area_mm2": p.decode_area_mm2, "point": p.source, "budget_bpw": p.budget_bpw,
            "formats": dict(Counter(p.assignment.values()).most_common()),
        } for p in points], columns=["bpw", "bpw_streamed", "bpw_budgeted", "gap", "error", "energy_j_per_token", "tokens_per_s", "bytes_per_token",
                                     "decode_area_mm2", "point", "budget_bpw", "formats"])


def explore(s: Scenario, *, jobs: int | None = None, scheduler: str | None = None,
            on_tensor: Callable[[Tensor], None] | None = None,
            on_start: Callable[[int], None] | None = None,
            on_executor: Callable[[str], None] | None = None,
            on_stage: Callable[[str, int, int], None] | None = None) -> ExploreResult:
    """Run a scenario end to end.

    Args:
        jobs: measurement processes and budgets solved at once (None: all cores; 1: in this
            process, one budget at a time).
        scheduler: a Dask scheduler address or 'local' (overrides the scenario's
            ``executor.scheduler``); None keeps the scenario's choice.
        on_executor: called with where the measurement runs (e.g. 'Dask tcp://..., 8 workers').
        on_start: called with the number of tensors before measuring.
        on_tensor: called as each tensor is measured (progress).
        on_stage: ``(stage, done, total)`` progress of the forward-pass stages ('sensitivity',
            'validation'; models with a forward pass, see dse.output).
    Raises:
        ScenarioError: every problem of the scenario at once, before anything is measured.
    """
    # 1. validate and build: hardware, tensors and statistics, once (every problem pooled)
    built = setup(s)
    # the hardware's LUT word on LUT-decoded candidates; what the LUT SRAM cannot hold is left out
    fitted = fit_to_hardware(s.candidates, built.hardware, s.hardware.lut_sram_bits_per_layer)
    s = replace(s, candidates=fitted.candidates)
    if on_start:
        on_start(len(built.tensors))
    # 2. measure every (tensor, candidate) pair, cached
    with open_executor(scheduler or s.scheduler, jobs) as executor:
        if on_executor:
            on_executor(executor.label)
        table = measure_table(s, built, executor, on_tensor=on_tensor, while_measuring=_import_later_steps)
    if s.metric == "output":  # predicted output error: measured gain x squared error
        table = output_table(s, built.tensors, table, s.input_path, jobs=jobs,
                             on_progress=lambda d, n: on_stage and on_stage("sensitivity", d, n))
    # 3. allocate: the knapsack, its front at every budget, and the uniform baselines, costed by hwcost
    allocation = build_problem(s, built.tensors, table, built.hardware)
    front, rows = solve_front(s, allocation, built.hardware, threads=jobs)
    if not any(r.point is not None for r in rows):
        raise ScenarioError(f"{s.path}: budgets: no requested budget can be met: {rows[0].note}")
    uniform = baselines(s, allocation, built.hardware)
    if not can_validate(s, built.tensors, s.input_path):
        return ExploreResult(s, built.tensors, table, tuple(front), tuple(rows), tuple(uniform), built.skipped_sources,
                             excluded=fitted.excluded)
    # 4. validate: each requested budget's answer (once, however many budgets share it) and every
    # uniform format, measured end to end
    answers: dict[tuple[tuple[str, str], ...], FrontPoint] = {}
    for r in rows:
        if r.point is not None:
            answers.setdefault(_key(r.point), r.point)  # labelled by the lowest budget it answers
    front = list(answers.values())
    checks = validate(s, built.tensors, front + uniform, s.input_path, jobs=jobs,
                      on_progress=lambda d, n: on_stage and on_stage("validation", d, n))
    flagged, keep = flag_and_filter(front, checks[:len(front)])
    points = [replace(p, validation=v) for p, v in zip(front, flagged)]
    kept = [points[i] for i in keep]
    keys = list(answers)
    validation, exported = dict(zip(keys, flagged)), {keys[i] for i in keep}
    for j, r in enumerate(rows):
        if r.point is None:
            continue
        k = _key(r.point)
        v, note = validation[k], r.note
        if k not in exported:  # measured worse than a cheaper answer: the budget gets no config, and says so
            cheaper = "a cheaper point" if v.worse_than is None else f"the {v.worse_than:.4f}-bpw point"
            note = f"{note}; measured worse than {cheaper} end to end: no config"
        rows[j] = replace(r, point=replace(r.point, validation=v), dominated=k not in exported, note=note)
    return ExploreResult(s, built.tensors, table, tuple(kept), tuple(rows),
                         tuple(replace(p, validation=v) for p, v in zip(uniform, checks[len(front):])),
                         built.skipped_sources, tuple(p for p in points if p not in kept), fitted.excluded)


def _import_later_steps() -> None:
    """What solving (scipy.sparse) and the plots (matplotlib, ~1 s together) import, done while
    the workers measure and this process would only wait."""
    import scipy.sparse  # noqa: F401

    pyplot()


def _key(p: FrontPoint) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(p.assignment.items()))


def bpw_label(bpw: float) -> str:
    """File-name label of a front point: 4 decimals, e.g. 5.2500."""
    return f"{math.floor(bpw * 1e4 + 0.5) / 1e4:.4f}"
