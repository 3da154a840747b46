"""Sampled error measurement for very large models: a seeded sample of row groups per tensor.

Design (a textbook survey estimator, stated here so it can be checked):

* **Units.** A tensor's rows are cut into groups of ``ROW_GROUP_ROWS`` (8) rows. Blocks run
  along rows, so a row group is quantized independently of the others *once the per-tensor
  constants are fixed*. Those constants (the FP32/POT tensor factor, the single scale of an
  ``@layer`` candidate) depend only on the tensor's extreme element.
* **Certainty unit.** The group holding the row of the tensor's largest |w| is always measured.
  Every other measurement is made on ``[that row; sampled rows]`` and the row's own error is
  subtracted, so sampled blocks are quantized exactly as in the whole tensor. Synthetic sources
  know that row without generating the tensor (models/synthetic.py); other sources load the
  tensor once (one tensor in memory, as in exact mode) and find it.
* **Sample.** ``n = max(REPLICATES, ceil(fraction * (N - 1)))`` of the other ``N - 1`` groups are
  drawn without replacement by ``default_rng([seed, name_key(name)])`` and dealt into
  ``REPLICATES`` random groups (replicates) of nearly equal size. When n reaches N - 1, or the
  tensor has at most ``EXACT_TENSOR_ELEMENTS`` weights, the tensor is measured exactly.
* **Estimates.** Replicate k estimates the tensor's error sums as
  ``certain + (N - 1) / n_k * sum over its groups``; the point estimate uses all n groups. Sums
  of replicates over tensors estimate the model total. A metric m (rel. MSE, ...) is evaluated on
  the point estimate, and its 95 % confidence interval is ``m ± t(0.975, K-1) * sd_k(m_k) / sqrt(K)``
  (the random-groups variance estimator; Wolter, *Introduction to Variance Estimation*, ch. 2).
  Exactly measured tensors contribute identical replicates, i.e. no variance.
* **Learned grids** (DD4) are fitted once per tensor, on every measured row (the certain group
  and the whole sample), and that one grid is applied to each sub-measurement. The CI therefore
  covers the sampling error of the error sums *given that grid*; it does not cover how much a
  fit on the whole tensor would differ from the fit on the sample (with 2**16-bin histograms of
  ~10**5+ sampled weights the levels move by ~1e-3 of the block range: small beside the CI).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from models.source import RowSource, TensorInfo, WeightSource
from models.synthetic import ROW_GROUP_ROWS, name_key
from quant import Candidate, ErrorStats, fit_grids, measure
from quant.metrics import STAT_FIELDS

REPLICATES = 10
"""Random groups per tensor: the CI has REPLICATES - 1 degrees of freedom."""
EXACT_LIMIT_ELEMENTS = 1 << 30
""":func:`auto_fraction`: sources up to this many weights (4 GiB of float32) are measured exactly."""
TARGET_ELEMENTS = 1 << 26
""":func:`auto_fraction` above the limit: fraction = TARGET_ELEMENTS / total weights (before minimums)."""
EXACT_TENSOR_ELEMENTS = 1 << 21
"""Tensors up to this size are measured whole even in sampled mode: one quant.measure call on
them (~25 ms) costs less than the REPLICATES + 2 calls of a sample."""
CONFIDENCE = 0.95


@dataclass(frozen=True)
class SampledStats:
    """Point estimate of one error total and its replicate estimates; ``+`` merges tensors."""

    estimate: ErrorStats
    replicates: tuple[ErrorStats, ...]

    def __add__(self, other: SampledStats) -> SampledStats:
        return SampledStats(self.estimate + other.estimate,
                            tuple(a + b for a, b in zip(self.replicates, other.replicates, strict=True)))

    def interval(self, metric: Callable[[ErrorStats], float]) -> tuple[float, float]:
        """95 % confidence interval of ``metric`` (e.g. ``lambda s: s.rel_mse``)."""
        point = metric(self.estimate)
        values = np.array([metric(r) for r in self.replicates])
        k = values.size
        from scipy import stats as scipy_stats  # lazy: scipy.stats costs 0.3 s at every `dse` start

        half = float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, k - 1) * values.std(ddof=1) / math.sqrt(k))
        return point - half, point + half

    @property
    def rel_mse_ci95(self) -> tuple[float, float]:
        return self.interval(lambda s: s.rel_mse)


def exact(stats: ErrorStats) -> SampledStats:
    """An exactly measured total: every replicate equals it (no sampling variance)."""
    return SampledStats(stats, (stats,) * REPLICATES)


def auto_fraction(total_elements: int) -> float | None:
    """The default sample fraction for a source of ``total_elements`` weights (None: measure exactly).

    Sources up to EXACT_LIMIT_ELEMENTS weights are measured exactly; larger ones sample
    TARGET_ELEMENTS weights' worth of row groups.
    """
    return None if total_elements <= EXACT_LIMIT_ELEMENTS else min(1.0, TARGET_ELEMENTS / total_elements)


def sample_tensor(
    source: WeightSource,
    info: TensorInfo,
    candidates: Sequence[Candidate],
    fraction: float,
    *,
    seed: int = 0,
    act: np.ndarray | None = None,
    threads: int | None = None,
) -> list[SampledStats]:
    """Estimated error of each candidate on one tensor, from a seeded sample of its row groups.

    Args:
        source: where the tensor comes from; a :class:`RowSource` never materialises the tensor.
        info: the tensor.
        fraction: share of row groups to measure, in (0, 1].
        act: optional (in,) activation weights, passed to :func:`quant.measure`.
    Returns:
        One :class:`SampledStats` per candidate, in order.
    """
    rows, cols = info.shape
    n_groups = -(-rows // ROW_GROUP_ROWS)
    if isinstance(source, RowSource):
        rows_source: RowSource = source
        top = int(rows_source.absmax_row(info.name))

        def take(index: np.ndarray) -> np.ndarray:
            return np.asarray(rows_source.load_rows(info.name, index))
    else:
        whole = source.load(info.name)
        # argmax of a row with NaN lands on it, so quant's NaN check sees that row
        top = int(np.argmax(np.abs(whole).max(axis=1)))

        def take(index: np.ndarray) -> np.ndarray:
            return whole[index]

    certain = top // ROW_GROUP_ROWS
    others = np.delete(np.arange(n_groups), certain)
    n = min(others.size, max(REPLICATES, math.ceil(fraction * others.size)))
    if n == others.size or info.numel <= EXACT_TENSOR_ELEMENTS:
        w = take(np.arange(rows))
        return [exact(measure(w, c, act=act, name=info.name, threads=threads)) for c in candidates]
    rng = np.random.default_rng([seed, name_key(info.name)])
    parts = np.array_split(rng.choice(others, n, replace=False), REPLICATES)
    certain_rows = take(_group_rows(np.array([certain]), rows))
    anchor = certain_rows[top - certain * ROW_GROUP_ROWS:][:1]
    part_rows = [np.concatenate([anchor, take(_group_rows(p, rows))]) for p in parts]
    sample = np.concatenate([certain_rows, *(w[1:] for w in part_rows)])  # every measured row once
    out = []
    for c in candidates:
        grids = None
        if c.learned:
            grids = fit_grids(sample, c, act=act, name=info.name, threads=threads)
        run = functools.partial(measure, candidate=c, act=act, name=info.name, threads=threads, grids=grids)
        alone = run(anchor)
        sums = [_combine(run(w), alone, -1.0) for w in part_rows]
        base = run(certain_rows)
        estimate = _combine(base, functools.reduce(operator.add, sums), others.size / n)
        replicates = [_combine(base, s, others.size / p.size) for s, p in zip(sums, parts, strict=True)]
        out.append(SampledStats(replace(estimate, numel=info.numel),
                                tuple(replace(r, numel=info.numel) for r in replicates)))
    return out


def _group_rows(groups: np.ndarray, rows: int) -> np.ndarray:
    """Row indices of row groups ``groups`` (the last group may be short)."""
    index = (groups[:, None] * ROW_GROUP_ROWS + np.arange(ROW_GROUP_ROWS)).reshape(-1)
    return index[index < rows]


def _combine(a: ErrorStats, b: ErrorStats, factor: float) -> ErrorStats:
    """a + factor * b, field by field; counts (numel, blocks...) rounded to integers."""
    values = {}
    for name in STAT_FIELDS:
        mine = getattr(a, name)
        value = mine + factor * getattr(b, name)
        values[name] = int(round(value)) if isinstance(mine, int) else value
    return ErrorStats(**values)
