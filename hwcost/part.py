"""A hardware unit's cost: energy per operation, area per instance, and the constants behind them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Part:
    """Energy of one operation and area of one instance of a unit, at the target node."""

    energy_pj: float = 0.0
    area_um2: float = 0.0
    uses: frozenset[str] = field(default_factory=frozenset)
    """Names of the constants (hwcost.constants) the numbers come from."""

    def __add__(self, other: Part) -> Part:
        """Two sub-units that act together in one operation."""
        return Part(self.energy_pj + other.energy_pj, self.area_um2 + other.area_um2, self.uses | other.uses)

    def __mul__(self, n: float) -> Part:
        """``n`` copies acting together (e.g. n bit slices)."""
        return Part(self.energy_pj * n, self.area_um2 * n, self.uses)


NOTHING = Part()
"""The unit that is not there (e.g. the multiplier of a power-of-two scale)."""
