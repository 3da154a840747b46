"""Output-aware allocation: the ``output`` objective and the end-to-end validation of a front.

* :func:`output_table` turns the measured (tensor x candidate) table into predicted output errors:
  ``error = gain x sse`` with gains measured by :mod:`dse.sensitivity` (or imported from
  ``model.sensitivity``), or, with ``objective.output_errors: table``, the output error of every
  pair measured directly.
* :func:`validate` quantizes every requested-budget point and every uniform baseline end to end,
  runs the model on the held-out text (:mod:`dse.evaluate`) and returns the measured output
  error of each; :func:`flag_and_filter` marks a point that measures worse than a cheaper one
  and keeps the points non-dominated on (bpw, measured output error).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from quant.errors import DseError


class OutputObjectiveError(DseError):
    """The ``output`` objective cannot be computed for this scenario (one line, with the fix)."""


@dataclass(frozen=True)
class Validation:
    """Measured output of one point on the held-out text."""

    measured: float
    """Encoder: mean 1 - cos; decoder: mean KL in nats/token (same units as the output objective)."""
    metric: str
    perplexity: float | None = None
    reference_perplexity: float | None = None
    worse_than: float | None = None
    """bpw of a cheaper validated point whose measured output error is lower (None: no such point)."""


def output_table(s: Any, tensors: Sequence[Any], table: pd.DataFrame, source_spec: Callable[[str], str], *,
                 jobs: int | None = None, on_progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """The measurement table with ``error`` set to the predicted output error of each pair.

    Adds the columns ``gain`` (output error per unit of SSE; NaN in table mode) and
    ``output_error`` (gain x sse, or the measured value in table mode).

    Args:
        s: the scenario (``metric == 'output'``).
        tensors: the scenario's tensors (``name``, ``source``, ``source_name``).
        table: one row per (tensor, candidate) with ``tensor``, ``candidate``, ``sse``.
        source_spec: a tensor's ``source`` as the library opens it (relative paths resolved).

    Raises:
        OutputObjectiveError: a source has no forward pass and no ``model.sensitivity`` file.
    """
    from dse.sensitivity import load_gains, measure_gains, measure_output_errors
    from models.forward import FORWARD_SPECS, has_forward
    from models.texts import CALIBRATION

    table = table.copy()
    if s.sensitivity is not None:
        gains = load_gains(source_spec(s.sensitivity), [t.name for t in tensors])
        table["gain"] = table["tensor"].map(gains)
        table["output_error"] = table["gain"] * table["sse"]
        table["error"] = table["output_error"]
        return table
    by_source: dict[str, list[Any]] = {}
    for t in tensors:
        by_source.setdefault(t.source, []).append(t)
    for source in by_source:
        if not has_forward(source_spec(source)):
            raise OutputObjectiveError(
                f"{s.path}: objective.metric: output: weights {source!r} have no forward pass here "
                f"(supported: {FORWARD_SPECS}); give model.sensitivity: FILE with per-tensor gains measured elsewhere")
    total = sum(len(ts) for ts in by_source.values()) * (len(s.candidates) if s.output_errors == "table" else 1)
    done_before = 0
    output: dict[str, float] = {}
    gains_of: dict[str, float] = {}
    key_of: dict[tuple[str, str], float] = {}
    for source, ts in by_source.items():
        spec = source_spec(source)

        def progress(done: int, _: int, base: int = done_before) -> None:
            if on_progress:
                on_progress(base + done, total)

        names = {t.source_name: t.name for t in ts}
        if s.output_errors == "table":
            pairs = [(t.source_name, c) for t in ts for c in table.loc[table["tensor"] == t.name, "candidate"]]
            found = measure_output_errors(spec, pairs, CALIBRATION, s.cache_dir, jobs=jobs, on_pair=progress)
            key_of.update({(names[t], c): e.output_error for (t, c), e in found.items()})
            done_before += len(pairs)
        else:
            found_gains = measure_gains(spec, list(names), CALIBRATION, s.cache_dir, jobs=jobs, on_pair=progress)
            gains_of.update({names[t]: e.gain for t, e in found_gains.items()})
            output.update({names[t]: e.output_error for t, e in found_gains.items()})
            done_before += len(names)
    if s.output_errors == "table":
        table["gain"] = float("nan")
        table["output_error"] = [key_of[(t, c)] for t, c in zip(table["tensor"], table["candidate"])]
    else:
        table["gain"] = table["tensor"].map(gains_of)
        table["output_error"] = table["gain"] * table["sse"]
    table["error"] = table["output_error"]
    return table


def can_validate(s: Any, tensors: Sequence[Any], source_spec: Callable[[str], str]) -> bool:
    """Validation needs one model: every tensor from one source that has a forward pass."""
    from models.forward import has_forward

    sources = {t.source for t in tensors}
    return s.validate and len(sources) == 1 and has_forward(source_spec(next(iter(sources))))


def validate(s: Any, tensors: Sequence[Any], points: Sequence[Any], source_spec: Callable[[str], str], *,
             jobs: int | None = None, on_progress: Callable[[int, int], None] | None = None) -> list[Validation]:
    """Measured held-out output error of each point (its ``assignment``: scenario tensor -> candidate)."""
    from dse.evaluate import evaluate_assignments

    source_name = {t.name: t.source_name for t in tensors}
    spec = source_spec(tensors[0].source)
    assignments = [{source_name[t]: c for t, c in p.assignment.items()} for p in points]
    evaluations = evaluate_assignments(spec, assignments, cache_root=s.cache_dir, jobs=jobs, on_done=on_progress)
    return [Validation(e.output_error, e.metric, e.perplexity, e.reference_perplexity) for e in evaluations]


def flag_and_filter(points: Sequence[Any], checks: Sequence[Validation]) -> tuple[list[Validation], list[int]]:
    """Flag each point that measures worse than a cheaper one; indices of the non-dominated points.

    A point is dominated when another point has at most its bpw and a lower measured error (or
    fewer bits and the same error). Returns the validations with ``worse_than`` set (the bpw of
    the cheapest such point) and the indices, by bpw, of the points kept on the exported front.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i].bpw, checks[i].measured))
    flagged = list(checks)
    keep = []
    best_i: int | None = None
    for i in order:
        if best_i is not None and checks[best_i].measured <= checks[i].measured:
            cheaper = min((j for j in order if points[j].bpw <= points[i].bpw and j != i
                           and checks[j].measured < checks[i].measured), key=lambda j: points[j].bpw, default=None)
            flagged[i] = replace(checks[i], worse_than=None if cheaper is None else points[cheaper].bpw)
            continue
        keep.append(i)
        best_i = i
    return flagged, keep
