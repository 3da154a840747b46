"""Compare a computed number with a number printed in a reference table."""

from __future__ import annotations

from decimal import Decimal


def agrees_with_printed(value: float, printed: str, rel: float = 0.0) -> bool:
    """True when ``value`` rounds to ``printed``: within half a unit of its last printed digit.

    ``rel`` widens the band where the reference multiplied by a factor it had rounded itself.
    """
    half_unit = Decimal(1).scaleb(Decimal(printed).as_tuple().exponent) / 2
    return abs(Decimal(repr(value)) - Decimal(printed)) <= half_unit + Decimal(repr(rel)) * abs(Decimal(printed))
