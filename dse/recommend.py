"""What an exploration recommends: per requested budget the chosen mix, its gain over the best
single format that fits the budget, the decode units it needs, and the trade-offs between budgets.

Points are judged by their measured output error (1 - cos, or KL) where the exploration
validated them end to end (``objective.metric: output``), else by the scenario's error.

Library API::

    from dse.recommend import recommend
    recs, trades = recommend(result, hardware)
    recs[0].sentence(), trades[0].sentence()
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from dse.allocation import FrontPoint
from dse.pipeline import ExploreResult
from dse.render import fixed
from hwcost import Hardware, datapath
from quant import aliases, parse_candidate

MAX_SHOWN = 5
"""Budgets summarised in the recommendation; every budget stays in the table and pareto.csv."""


@dataclass(frozen=True)
class Recommendation:
    """The front point at one requested budget, set against the single formats that fit it."""

    budget_bpw: float
    point: FrontPoint
    mix: tuple[tuple[str, int], ...]
    """(candidate, tensors using it), most used first."""
    baseline: FrontPoint | None
    """The best single format applied everywhere whose nominal bpw is at or below the budget (None: none fits)."""
    units: tuple[str, ...]
    """Decode hardware units the mix needs (hwcost area item keys), sorted."""

    @property
    def baseline_name(self) -> str | None:
        return None if self.baseline is None else uniform_name(self.baseline)

    @property
    def gain(self) -> float | None:
        """Fraction of the baseline's error the mix saves (0.06: 6 % less error)."""
        if self.baseline is None:
            return None
        mine, theirs = _pair(self.point, self.baseline)
        return 1.0 - mine / theirs if theirs > 0 else None

    def sentence(self) -> str:
        mix = ", ".join(f"{name} x{n}" for name, n in self.mix[:3]) + (
            f" and {len(self.mix) - 3} more" if len(self.mix) > 3 else "")
        text = (f"At {self.budget_bpw:.2f} bpw use {mix} ({self.point.bpw:.4f} bpw, "
                f"{judged_label(self.point)} {judged_text(self.point)})")
        if self.baseline is not None and self.gain is not None and abs(self.gain) < 5e-4:
            text += f": the best single format that fits, {with_alias(self.baseline_name)}, is already the best choice"
        elif self.baseline is not None and self.gain is not None:
            verb = "below" if self.gain >= 0 else "above"
            text += (f": {abs(100 * self.gain):.1f} % {verb} the best single format that fits, "
                     f"{with_alias(self.baseline_name)} ({self.baseline.bpw:.4f} bpw, {judged_text(self.baseline)})")
        else:
            text += "; no single format fits this budget"
        return text + (f". Decode: {len(self.units)} units, {self.point.decode_area_mm2:.4f} mm2 "
                       f"({', '.join(self.units)}).")


@dataclass(frozen=True)
class TradeOff:
    """Moving from one recommended budget to the next."""

    low: FrontPoint
    high: FrontPoint

    def sentence(self) -> str:
        extra = self.high.bpw - self.low.bpw
        high, low = _pair(self.high, self.low)
        drop = 1.0 - high / low if low > 0 else 0.0
        energy = self.high.energy_j_per_token / self.low.energy_j_per_token - 1.0
        speed = 1.0 - self.high.tokens_per_s / self.low.tokens_per_s
        return (f"Spending {extra:.2f} bpw more ({self.low.bpw:.2f} -> {self.high.bpw:.2f}) buys "
                f"{100 * abs(drop):.1f} % {'less' if drop >= 0 else 'MORE'} {judged_label(self.high)} for {100 * abs(energy):.1f} % "
                f"{'more' if energy >= 0 else 'less'} energy per token and {100 * abs(speed):.1f} % "
                f"{'fewer' if speed >= 0 else 'more'} tokens/s.")


def judged(p: FrontPoint) -> float:
    """The figure a point is judged by: its measured output error when validated, else its error."""
    return p.validation.measured if p.validation is not None else p.error


def _pair(a: FrontPoint, b: FrontPoint) -> tuple[float, float]:
    """Both points' measured output errors when both were validated, else both errors."""
    if a.validation is not None and b.validation is not None:
        return a.validation.measured, b.validation.measured
    return a.error, b.error


def fmt_measured(p: FrontPoint) -> str:
    """The measured output error as printed: 1 - cos in ppm, KL [nats/token] in fixed notation; '-' if not validated."""
    if p.validation is None:
        return "-"
    if p.validation.metric == "1-cos":
        return f"{p.validation.measured * 1e6:,.0f} ppm"
    return fixed(p.validation.measured)


def judged_text(p: FrontPoint) -> str:
    """:func:`judged` as printed."""
    return fmt_measured(p) if p.validation is not None else fixed(p.error)


def judged_label(p: FrontPoint) -> str:
    if p.validation is None:
        return "error"
    return f"measured {'1-cos' if p.validation.metric == '1-cos' else 'KL'}"


def uniform_name(p: FrontPoint) -> str:
    """The candidate of a uniform baseline point."""
    return next(iter(p.assignment.values()))


def with_alias(name: str | None) -> str:
    """``NAME (= INDUSTRY NAME)`` when the candidate has an industry alias, else the name."""
    found = aliases.aliases_of(name or "")
    return f"{name} (= {found[0]})" if found else str(name)


def decode_units(p: FrontPoint, hw: Hardware) -> list[str]:
    """The decode hardware units a point's assignment needs (hwcost area item keys), sorted."""
    return sorted({item.key for name in set(p.assignment.values()) for item in datapath(parse_candidate(name), hw).area})


def budget_points(result: ExploreResult) -> list[FrontPoint]:
    """The front points at requested budgets (the ILP answers), by budget."""
    return sorted((p for p in result.front if p.budget_bpw is not None), key=lambda p: p.budget_bpw or 0.0)


def recommend(result: ExploreResult, hw: Hardware) -> tuple[list[Recommendation], list[TradeOff]]:
    """Recommendations at up to :data:`MAX_SHOWN` requested budgets (evenly spread, both ends kept),
    and one trade-off between each consecutive pair."""
    points = budget_points(result)
    if len(points) > MAX_SHOWN:
        step = (len(points) - 1) / (MAX_SHOWN - 1)
        points = [points[round(i * step)] for i in range(MAX_SHOWN)]
    recs = []
    for p in points:
        budget = p.budget_bpw if p.budget_bpw is not None else p.bpw
        # "Fits" by nominal bpw (per-tensor constants excluded): NVFP4 is a 4.5-bpw format at a 4.5 budget.
        fits = [b for b in result.baselines if parse_candidate(uniform_name(b)).nominal_bpw <= budget + 1e-9]
        best = min(fits, key=judged) if fits else None
        units = decode_units(p, hw)
        mix = tuple(Counter(p.assignment.values()).most_common())
        recs.append(Recommendation(budget, p, mix, best, tuple(units)))
    trades = [TradeOff(a.point, b.point) for a, b in zip(recs, recs[1:]) if b.point.bpw > a.point.bpw]
    return recs, trades
