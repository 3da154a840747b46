"""Seeded synthetic weights for any catalog shape, generated one row group at a time.

Kinds (all unit-variance before scaling; σ = 1/sqrt(in_features), a Kaiming-like magnitude):

* ``gaussian``  N(0, 1);
* ``laplace``   Laplace with scale 1/sqrt(2) (unit variance: Laplace(b) has variance 2b²);
* ``student-t`` Student's t with ν = 5 degrees of freedom, scaled by sqrt((ν-2)/ν);
* ``llm-like``  a model of trained weights, calibrated to the real statistics in
  docs/weights.md (MiniLM-L6 F32, the only float checkpoint available offline):

      w[r, c] = σ · a[r] · b[c] · h(z[r, c])      plus rare planted outliers

  - ``a`` (per output row) and ``b`` (per input channel) are log-normal scales,
    log2 a ~ N(0, row_spread²), log2 b ~ N(0, col_spread²), normalised to mean square 1. They
    produce the block-scale spread of real weights (std of log2 block absmax 0.37–0.75 on
    MiniLM against 0.34 for Gaussian data) while the crest factor *inside* a block of 16 stays
    near Gaussian (2.11–2.24), as docs/weights.md statistic 3 reports.
  - ``h`` is Tukey's h transform z·exp(h z²/2) of a standard normal (rescaled to unit
    variance): a smooth heavier tail whose excess kurtosis is 3(1-2h)³/(1-4h)^2.5 - 3.
  - Outliers: a Poisson number of elements (``outlier_rate`` per element) replaced by
    ±m·σ with m log-uniform in [outlier_min, outlier_max]: MiniLM's down projections hold
    elements at 23–175σ (docs/weights.md statistic 1).
  - Parameters depend on the role (:data:`PROFILES`): o and down projections get the heavier
    tails and the outliers (statistic 2), v the wider input-channel spread, embeddings the
    wide row spread. Values were fitted by matching, per role, the median over MiniLM's six
    layers of excess kurtosis, block-16 crest factor, std of log2 block absmax and the row /
    column RMS spreads; ``tests/models/test_synthetic.py`` checks the match and its tolerances.

Every kind is clipped at M, the value the tensor's |w| exceeds with probability 1/numel (so
about one element is clipped), and one element per tensor is set to ±M. The tensor's absmax,
and the row that holds it, are therefore known before any row is generated: sampled
measurement (models/sampling.py) needs them to quantize a sample exactly as the whole tensor.

Reproducibility: tensor ``name`` under ``seed`` draws its scales from
``default_rng([seed, key, 0])`` and row group g from ``default_rng([seed, key, 1, g])``
(key = 64-bit BLAKE2b hash of the name), so any subset of rows is generated alone and equals
the same rows of the whole tensor.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import NamedTuple

import numpy as np

from models.catalog import ModelSpec
from models.errors import SourceError
from models.source import TensorInfo

KINDS = ("gaussian", "laplace", "student-t", "llm-like")
GENERATOR_VERSION = 1
"""Bump when a change here alters generated values: warm runs trust fingerprints that carry it."""
ROW_GROUP_ROWS = 8
"""Rows generated together from one seed: the unit of generation and of sampling (8 rows of a
4096-wide matrix cost ~0.5 ms to draw against ~8 us to seed their generator)."""
GROUPS_PER_TASK = 32
"""Row groups per thread-pool task when a tensor is generated (amortises the task overhead)."""
STUDENT_T_DOF = 5.0
_GRID = 32  # quantiles of a and b used to solve for the clip value M


@dataclass(frozen=True, slots=True)
class Profile:
    """Parameters of the llm-like model for one role (see module docstring)."""

    row_spread_log2: float
    col_spread_log2: float
    tail_h: float
    outlier_rate: float = 0.0
    """Planted outliers per element."""
    outlier_min: float = 0.0
    """Smallest outlier magnitude, in units of the tensor RMS σ."""
    outlier_max: float = 0.0


_ATTN_IN = Profile(row_spread_log2=0.14, col_spread_log2=0.14, tail_h=0.015)
PROFILES = {
    **dict.fromkeys(("q", "k", "qkv", "q_a", "q_b", "kv_a", "kv_b", "router", "other"), _ATTN_IN),
    **dict.fromkeys(("v", "kv"), Profile(0.16, 0.31, 0.0)),
    "o": Profile(0.45, 0.17, 0.0, outlier_rate=2e-6, outlier_min=8.0, outlier_max=24.0),
    **dict.fromkeys(("gate", "up", "gate_up", "expert_gate", "expert_up"),
                    Profile(0.30, 0.14, 0.02, outlier_rate=1e-6, outlier_min=8.0, outlier_max=24.0)),
    **dict.fromkeys(("down", "expert_down"),
                    Profile(0.28, 0.23, 0.04, outlier_rate=7e-6, outlier_min=16.0, outlier_max=128.0)),
    **dict.fromkeys(("embed", "lm_head"), Profile(0.38, 0.04, 0.0)),
}
"""llm-like parameters per role, fitted to MiniLM-L6 (docs/weights.md; module docstring)."""


class SyntheticTensor(NamedTuple):
    """Name, role and (out, in) shape of one synthetic matrix."""

    name: str
    role: str
    shape: tuple[int, int]


@dataclass(frozen=True)
class _Plan:
    """Everything about one tensor that is fixed before its rows are generated (small arrays)."""

    sigma: float
    row_scale: np.ndarray | None
    """(out,) float32, or None for i.i.d. kinds."""
    col_scale: np.ndarray | None
    clip: float
    """M: bulk values are clipped to just below it."""
    special_rows: np.ndarray
    """Rows, columns and values of the pinned ±M element and the planted outliers."""
    special_cols: np.ndarray
    special_values: np.ndarray
    absmax_row: int


class SyntheticSource:
    """Seeded synthetic matrices of given names and shapes; rows can be generated on their own."""

    def __init__(self, kind: str, tensors: Sequence[SyntheticTensor], seed: int, label: str) -> None:
        if kind not in KINDS:
            raise SourceError(f"synthetic kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
        self.kind, self.seed, self.label = kind, seed, label
        self._tensors = {t.name: t for t in tensors}
        self._plan = lru_cache(maxsize=4)(self._make_plan)

    def infos(self) -> list[TensorInfo]:
        return [TensorInfo(t.name, t.shape, "F32") for t in self._tensors.values()]

    def load(self, name: str) -> np.ndarray:
        """The whole (out, in) float32 tensor, built row group by row group."""
        rows = self._tensor(name).shape[0]
        return self.load_rows(name, np.arange(rows))

    def load_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order) of the tensor, generating only the row groups they fall in."""
        t = self._tensor(name)
        plan = self._plan(name)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, t.shape[1]), np.float32)
        group_of = rows // ROW_GROUP_ROWS
        order = np.argsort(group_of, kind="stable")
        groups, first = np.unique(group_of[order], return_index=True)
        bounds = np.append(first, rows.size)

        def fill(batch: range) -> None:
            for i in batch:  # one vectorised draw per row group: the generation unit
                block = self._group(name, plan, t.shape, int(groups[i]))
                pick = order[bounds[i]:bounds[i + 1]]
                out[pick] = block[rows[pick] - groups[i] * ROW_GROUP_ROWS]

        # Groups are independent streams, so threads give the same rows; numpy draws without the GIL.
        batches = [range(i, min(i + GROUPS_PER_TASK, groups.size)) for i in range(0, groups.size, GROUPS_PER_TASK)]
        workers = min(len(batches), os.cpu_count() or 1)
        if workers <= 1:
            for batch in batches:
                fill(batch)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(fill, batches))
        return out

    def fingerprint(self, name: str) -> str:
        """The generator's inputs: version, kind, seed, name, role and shape."""
        return f"synthetic|{GENERATOR_VERSION}|{self.kind}|{self.seed}|{self._tensor(name)}"

    def changed(self) -> bool:
        """Never: generated from the seed, no file behind it."""
        return False

    def absmax_row(self, name: str) -> int:
        """Row holding the tensor's largest |w| (known from the plan, nothing generated)."""
        return self._plan(name).absmax_row

    def _tensor(self, name: str) -> SyntheticTensor:
        t = self._tensors.get(name)
        if t is None:
            raise SourceError(f"{self.label}: no tensor named {name!r}")
        return t

    def _make_plan(self, name: str) -> _Plan:
        t = self._tensor(name)
        out_f, in_f = t.shape
        numel = out_f * in_f
        rng = np.random.default_rng([self.seed, name_key(name), 0])
        profile = PROFILES.get(t.role, _ATTN_IN) if self.kind == "llm-like" else None
        row_scale = col_scale = None
        if profile is not None:
            row_scale = _log_normal_scales(rng, out_f, profile.row_spread_log2)
            col_scale = _log_normal_scales(rng, in_f, profile.col_spread_log2)
        sigma = 1.0 / np.sqrt(in_f)
        clip = sigma * _clip_value(self.kind, profile, row_scale, col_scale, numel)
        # pinned element at ±M, then outliers (positions distinct from it and from each other)
        n_out = min(int(rng.poisson(profile.outlier_rate * numel)), numel - 1) if profile else 0
        flat = rng.choice(numel, size=n_out + 1, replace=False)
        values = np.empty(flat.size, np.float64)
        values[0] = clip
        if n_out and profile is not None:
            lo, hi = np.log(profile.outlier_min), np.log(profile.outlier_max)
            values[1:] = sigma * np.exp(rng.uniform(lo, hi, n_out))
        values *= rng.choice((-1.0, 1.0), flat.size)
        rows, cols = np.divmod(flat, in_f)
        return _Plan(sigma, row_scale, col_scale, clip, rows, cols, values.astype(np.float32),
                     int(rows[np.argmax(np.abs(values))]))

    def _group(self, name: str, plan: _Plan, shape: tuple[int, int], g: int) -> np.ndarray:
        """Row group ``g`` of the tensor: (<= ROW_GROUP_ROWS, in) float32."""
        first = g * ROW_GROUP_ROWS
        n = min(ROW_GROUP_ROWS, shape[0] - first)
        rng = np.random.default_rng([self.seed, name_key(name), 1, g])
        block = _bulk(self.kind, rng, (n, shape[1]), self._tensor(name).role)
        block *= np.float32(plan.sigma)
        if plan.row_scale is not None and plan.col_scale is not None:
            block *= plan.row_scale[first:first + n, None]
            block *= plan.col_scale[None, :]
        # strictly below M, so the pinned element is the unique extreme
        bound = np.nextafter(np.float32(plan.clip), np.float32(0))
        np.clip(block, -bound, bound, out=block)
        mine = (plan.special_rows >= first) & (plan.special_rows < first + n)
        block[plan.special_rows[mine] - first, plan.special_cols[mine]] = plan.special_values[mine]
        return block


def name_key(name: str) -> int:
    """A stable 64-bit integer for a tensor name (BLAKE2b), to seed per-tensor generators."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _log_normal_scales(rng: np.random.Generator, n: int, spread_log2: float) -> np.ndarray:
    s = np.exp2(spread_log2 * rng.standard_normal(n))
    return (s / np.sqrt(np.mean(s * s))).astype(np.float32)


def _tukey_sd(h: float) -> float:
    # Var[z exp(h z^2/2)] = (1 - 2h)^(-3/2) for z ~ N(0, 1)
    return float((1.0 - 2.0 * h) ** -0.75)


def _bulk(kind: str, rng: np.random.Generator, shape: tuple[int, int], role: str) -> np.ndarray:
    """Unit-variance float32 draws of the kind's bulk distribution."""
    if kind == "laplace":
        return rng.laplace(0.0, 1.0 / np.sqrt(2.0), shape).astype(np.float32)
    if kind == "student-t":
        scale = np.sqrt((STUDENT_T_DOF - 2.0) / STUDENT_T_DOF)
        return (rng.standard_t(STUDENT_T_DOF, shape) * scale).astype(np.float32)
    z = rng.standard_normal(shape, dtype=np.float32)
    if kind == "llm-like":
        h = PROFILES.get(role, _ATTN_IN).tail_h
        z *= np.exp(np.float32(h / 2.0) * z * z)
        z *= np.float32(1.0 / _tukey_sd(h))
    return z


def _tail(kind: str, profile: Profile | None, x: np.ndarray) -> np.ndarray:
    """P(|bulk| > x) of the unit-variance bulk."""
    if kind == "laplace":
        return np.exp(-np.sqrt(2.0) * x)
    if kind == "student-t":
        from scipy import stats  # lazy: scipy.stats costs 0.3 s at every `dse` start

        return 2.0 * stats.t.sf(x / np.sqrt((STUDENT_T_DOF - 2.0) / STUDENT_T_DOF), STUDENT_T_DOF)
    from scipy import special  # lazy: scipy costs 0.2 s at every `dse` start

    if profile is None:
        return 2.0 * special.ndtr(-x)
    z, g = _tukey_table(profile.tail_h)
    return 2.0 * special.ndtr(-np.interp(x, g, z, right=z[-1]))


@cache
def _tukey_table(h: float) -> tuple[np.ndarray, np.ndarray]:
    """(z, g(z)) on [0, 12] to invert the monotone Tukey transform g(z) = z exp(h z^2/2) / sd."""
    z = np.linspace(0.0, 12.0, 4097)
    return z, z * np.exp(h * z * z / 2.0) / _tukey_sd(h)


def _clip_value(kind: str, profile: Profile | None, row_scale: np.ndarray | None,
                col_scale: np.ndarray | None, numel: int) -> float:
    """M/σ with P(|w| > M) = 1/numel for the scale mixture, solved by bisection in log space."""
    scales = np.ones(1)
    if row_scale is not None and col_scale is not None:
        q = (np.arange(_GRID) + 0.5) / _GRID
        scales = np.outer(np.quantile(row_scale, q), np.quantile(col_scale, q)).reshape(-1)
    lo, hi = 0.0, 8.0  # log of M/σ; 40 halvings leave < 1e-11 relative
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if np.mean(_tail(kind, profile, np.exp(mid) / scales)) > 1.0 / numel:
            lo = mid
        else:
            hi = mid
    return float(np.exp(hi))


def synthetic_matrix(kind: str, shape: tuple[int, int], seed: int) -> SyntheticSource:
    """One synthetic matrix of ``shape``, named ``<kind>.0`` (spec ``synthetic:<kind>``)."""
    return SyntheticSource(kind, [SyntheticTensor(f"{kind}.0", "other", shape)], seed,
                           f"synthetic:{kind} {shape[0]}x{shape[1]} seed {seed}")


def synthetic_model(model: ModelSpec, kind: str, seed: int) -> SyntheticSource:
    """Every matrix of a catalogued model, MoE experts expanded (spec ``<model-id>:synthetic[:kind]``)."""
    tensors = [SyntheticTensor(name, t.role, t.shape) for t in model.tensors for name in t.instance_names()]
    return SyntheticSource(kind, tensors, seed, f"{model.id}:synthetic ({kind}, seed {seed})")
