"""The allocation problem: items (tensors or groups that share a format), options per item, costs.

This is what the optimizer sees, already reduced to numbers: no pydantic, no file formats.
Costs are per item and option and additive over items; hardware units (a decoder or LUT
datapath) carry a fixed charge paid once if any item uses them.

Two bit axes (README "Bit axes"): ``bits`` is what an assignment stores (capacity), ``streamed``
what one decode step reads per token (an embedding table is a lookup: one row per token). A
budget limits ``budget_bits``, one of the two without the per-tensor constants (a tensor's FP32
factor, a learned LUT image), so that a 4.5-bpw format meets a 4.5-bpw budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Problem:
    """A multiple-choice knapsack: pick one option per item."""

    items: tuple[str, ...]
    """Item names (a tensor, or a group of tensors that must share a format)."""
    options: tuple[str, ...]
    """Option (candidate) names; ``allowed`` says which apply to which item."""
    numel: np.ndarray
    """(n_items,) weights per item."""
    error: np.ndarray
    """(n_items, n_options) objective contribution (inf where not allowed)."""
    bits: np.ndarray
    """(n_items, n_options) total storage bits, per-tensor constants included."""
    energy: np.ndarray
    """(n_items, n_options) J per token for this item's weights (memory-bound decode)."""
    units_of_option: tuple[frozenset[str], ...]
    """Hardware units (LUT, decoder, scale multiplier...) each option needs."""
    unit_area_mm2: dict[str, float] = field(default_factory=dict)
    """Area of each hardware unit, paid once if any item uses it."""
    budget_bits: np.ndarray | None = None
    """(n_items, n_options) the bits a bpw budget limits; None: ``bits``."""
    budget_numel: float | None = None
    """Weights the budget's bits are divided by; None: ``total_numel``."""
    streamed: np.ndarray | None = None
    """(n_items, n_options) bits read per decode token; None: ``bits`` (every weight read once)."""
    streamed_numel: np.ndarray | None = None
    """(n_items,) weights read per decode token; None: ``numel``."""

    @property
    def allowed(self) -> np.ndarray:
        return np.isfinite(self.error)

    @property
    def total_numel(self) -> int:
        return int(self.numel.sum())

    @property
    def limit_bits(self) -> np.ndarray:
        """(n_items, n_options) bits a budget counts."""
        return self.bits if self.budget_bits is None else self.budget_bits

    @property
    def limit_numel(self) -> float:
        return float(self.total_numel if self.budget_numel is None else self.budget_numel)

    def evaluate(self, choice: np.ndarray, source: str = "ilp") -> Point:
        """Totals of an assignment ``choice`` (n_items,) of option indices."""
        rows = np.arange(len(self.items))
        units = set().union(*(self.units_of_option[k] for k in np.unique(choice)))
        streamed = self.bits if self.streamed is None else self.streamed
        streamed_numel = self.numel if self.streamed_numel is None else self.streamed_numel
        return Point(
            bpw=float(self.bits[rows, choice].sum() / self.total_numel),
            bpw_streamed=float(streamed[rows, choice].sum() / streamed_numel.sum()),
            budget_bpw=float(self.limit_bits[rows, choice].sum() / self.limit_numel),
            error=float(self.error[rows, choice].sum()),
            energy_j_per_token=float(self.energy[rows, choice].sum()),
            decode_area_mm2=float(sum(self.unit_area_mm2.get(u, 0.0) for u in units)),
            choice=tuple(int(k) for k in choice),
            source=source,
        )


@dataclass(frozen=True)
class Point:
    """One assignment and its totals."""

    bpw: float
    """Stored bits per weight, per-tensor constants included."""
    bpw_streamed: float
    """Bits read per decode token / weights read per decode token."""
    budget_bpw: float
    """The value a bpw budget compares with (``Problem.limit_bits`` per weight)."""
    error: float
    energy_j_per_token: float
    decode_area_mm2: float
    choice: tuple[int, ...]
    """Option index per item."""
    source: str = "ilp"
    """'hull' for a Lagrangian (convex hull) vertex, 'ilp' for an integer-program point."""


@dataclass(frozen=True)
class Caps:
    """Budgets on the whole model."""

    bpw: float
    energy_j_per_token: float | None = None
    decode_area_mm2: float | None = None
