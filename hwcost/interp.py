"""Piecewise power-law interpolation through tabulated points (all cost tables are log-log)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def bracket(xs: Sequence[float], x: float) -> tuple[int, ...]:
    """Indices of the points of ascending ``xs`` that ``loglog`` uses at ``x``.

    One index when ``x`` is a tabulated point, else the two ends of its segment; outside the
    table, the end segment (so the power law extends outwards).
    """
    i = bisect.bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return (i,)
    i = min(max(i, 1), len(xs) - 1)
    return (i - 1, i)


def loglog(points: Sequence[tuple[float, float]], x: float) -> float:
    """y at ``x`` on the power law between neighbouring (x, y) points; exact at a tabulated x."""
    xs = [p[0] for p in points]
    used = bracket(xs, x)
    if len(used) == 1:
        return points[used[0]][1]
    (x0, y0), (x1, y1) = points[used[0]], points[used[1]]
    t = math.log(x / x0) / math.log(x1 / x0)
    return float(y0 * (y1 / y0) ** t)
