"""The allocation problem: items (tensors or groups that share a format), options per item, costs.

This is what the optimizer sees, already reduced to numbers: no pydantic, no file formats.
Costs are per item and option and additive over items; hardware units (a decoder or LUT
datapath) carry a fixed charge paid once if any item uses them.
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
    """(n_items, n_options) total storage bits."""
    energy: np.ndarray
    """(n_items, n_options) J per token for this item's weights (memory-bound decode)."""
    units_of_option: tuple[frozenset[str], ...]
    """Hardware units (LUT, decoder, scale multiplier...) each option needs."""
    unit_area_mm2: dict[str, float] = field(default_factory=dict)
    """Area of each hardware unit, paid once if any item uses it."""

    @property
    def allowed(self) -> np.ndarray:
        return np.isfinite(self.error)

    @property
    def total_numel(self) -> int:
        return int(self.numel.sum())

    def evaluate(self, choice: np.ndarray) -> Point:
        """Totals of an assignment ``choice`` (n_items,) of option indices."""
        rows = np.arange(len(self.items))
        units = set().union(*(self.units_of_option[k] for k in choice))
        return Point(
            bpw=float(self.bits[rows, choice].sum() / self.total_numel),
            error=float(self.error[rows, choice].sum()),
            energy_j_per_token=float(self.energy[rows, choice].sum()),
            decode_area_mm2=float(sum(self.unit_area_mm2.get(u, 0.0) for u in units)),
            choice=tuple(int(k) for k in choice),
        )


@dataclass(frozen=True)
class Point:
    """One assignment and its totals."""

    bpw: float
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
