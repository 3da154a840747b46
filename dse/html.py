"""A self-contained ``report.html`` of an exploration: nothing is fetched when it opens.

It holds the recommendation, the front as an inline SVG plot (error vs bpw with the uniform
baselines; hovering a point shows its energy, tokens/s and area; a second panel plots energy
and tokens/s), the front and baseline table, a layer x role heatmap per recommended budget, and
the scenario file. No external script, style sheet, font or image: inline SVG and CSS only.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from dse.atomic import write_atomic
from dse.allocation import FrontPoint
from dse.pipeline import ExploreResult
from dse.layers import BitsGrid, bits_grid
from dse.recommend import (Recommendation, TradeOff, decode_units, fmt_measured, judged, judged_label, judged_text,
                           uniform_name)
from dse.render import fixed
from hwcost import Hardware
from quant import aliases

_W, _H, _PAD = 720, 380, (70, 20, 30, 50)  # SVG size; left, right, top, bottom margins [px]
_FRONT, _UNIFORM = "#1f77b4", "#d62728"
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:2px 6px}
td.n{text-align:right;font-variant-numeric:tabular-nums}pre{background:#f6f6f6;padding:.8em;overflow:auto}
.note{color:#8a4b00}svg text{font-size:11px}.hm td{text-align:center;color:#fff;min-width:4.5em}"""


def write_html(result: ExploreResult, hw: Hardware, recs: Sequence[Recommendation], trades: Sequence[TradeOff],
               notes: Sequence[str], metric: str, path: Path) -> Path:
    """Write the report to ``path`` atomically; returns the path. ``metric``: what the error column is."""
    s = result.scenario
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sop-dse: {_e(s.path.name)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>sop-dse report: {_e(s.path.name)}</h1>",
             f"<p>{_e(metric)} summed over {len(result.tensors)} tensors; hardware {_e(hw.name)}; "
             f"weights {_e(', '.join(dict.fromkeys(t.source for t in result.tensors)))}.</p>",
             "<h2>Recommendation</h2><ul>"]
    parts += [f"<li>{_e(r.sentence())}</li>" for r in recs]
    parts += [f"<li>{_e(t.sentence())}</li>" for t in trades]
    parts += [f"<li class='note'>Note: {_e(n)}</li>" for n in notes]
    parts.append("</ul><h2>Pareto front</h2>")
    parts.append(_front_svg(result, metric))
    parts.append(_cost_svg(result))
    parts.append(_front_table(result, hw))
    parts.append("<h2>Where the bits go</h2>")
    for r in recs:
        parts.append(_heatmap(bits_grid(result, r.point), f"{r.point.bpw:.4f} bpw (budget {r.budget_bpw:.2f})"))
    parts.append(f"<h2>Scenario</h2><pre>{_e(_scenario_text(s.path))}</pre>")
    parts.append(_CHECK)
    parts.append("</body></html>\n")
    write_atomic(path, "".join(parts))
    return path


# Marks the page once laid out: data-plot="W H N" (plot size in px, drawn points). A test reads it.
_CHECK = ("<script>addEventListener('load',function(){var p=document.getElementById('front');"
          "var b=p.getBoundingClientRect();document.documentElement.setAttribute('data-plot',"
          "Math.round(b.width)+' '+Math.round(b.height)+' '+p.querySelectorAll('circle').length);});</script>")


def spread_labels(points: list[tuple[float, float]], gap_decades: float = 0.05) -> list[float]:
    """Label heights for (bpw, error) points on a log axis: labels of points within 0.3 bpw of each
    other are pushed apart to at least ``gap_decades`` so they do not overprint."""
    order = sorted(range(len(points)), key=lambda i: points[i][1])
    placed: list[tuple[float, float]] = []  # (bpw, log10 label height)
    out = [0.0] * len(points)
    for i in order:
        x, y = points[i][0], math.log10(points[i][1])
        for px, py in sorted(placed, key=lambda q: q[1]):
            if abs(px - x) < 0.3 and y < py + gap_decades:
                y = py + gap_decades
        placed.append((x, y))
        out[i] = 10**y
    return out


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _scenario_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return str(path)


class _Axes:
    """Linear x, linear or log10 y, mapped onto the SVG plot area."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], log: bool) -> None:
        self.log = log
        ty = [self._t(y) for y in ys if y > 0 or not log]
        self.x0, self.x1 = min(xs) - 0.1, max(xs) + 0.1
        lo, hi = min(ty), max(ty)
        span = (hi - lo) or 1.0
        self.y0, self.y1 = lo - 0.05 * span, hi + 0.05 * span

    def _t(self, y: float) -> float:
        return math.log10(y) if self.log else y

    def x(self, v: float) -> float:
        return _PAD[0] + (v - self.x0) / (self.x1 - self.x0) * (_W - _PAD[0] - _PAD[1])

    def y(self, v: float) -> float:
        t = self._t(max(v, 1e-300)) if self.log else v
        return _H - _PAD[3] - (t - self.y0) / (self.y1 - self.y0) * (_H - _PAD[2] - _PAD[3])

    def frame(self, xlabel: str, ylabel: str) -> list[str]:
        out = [f"<rect x='{_PAD[0]}' y='{_PAD[2]}' width='{_W - _PAD[0] - _PAD[1]}' "
               f"height='{_H - _PAD[2] - _PAD[3]}' fill='none' stroke='#999'/>"]
        for k in range(math.ceil(self.x0 * 2), math.floor(self.x1 * 2) + 1):
            x = self.x(k / 2)
            out.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{_PAD[2]}' y2='{_H - _PAD[3]}' stroke='#eee'/>"
                       f"<text x='{x:.1f}' y='{_H - _PAD[3] + 14}' text-anchor='middle'>{k / 2:g}</text>")
        for t in range(math.ceil(self.y0), math.floor(self.y1) + 1) if self.log else []:
            y = self.y(10.0**t)
            out.append(f"<line x1='{_PAD[0]}' x2='{_W - _PAD[1]}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eee'/>"
                       f"<text x='{_PAD[0] - 4}' y='{y + 4:.1f}' text-anchor='end'>{fixed(10.0**t)}</text>")
        out.append(f"<text x='{(_W + _PAD[0]) / 2}' y='{_H - 8}' text-anchor='middle'>{_e(xlabel)}</text>"
                   f"<text transform='translate(14 {(_H - _PAD[3] + _PAD[2]) / 2}) rotate(-90)' "
                   f"text-anchor='middle'>{_e(ylabel)}</text>")
        return out


def _tip(p: FrontPoint, label: str) -> str:
    measured = f", {judged_label(p)} {judged_text(p)}" if p.validation is not None else ""
    return _e(f"{label}: {p.bpw:.4f} bpw, error {fixed(p.error)}{measured}, {p.energy_j_per_token * 1e3:.4f} "
              f"mJ/token, {p.tokens_per_s:,.0f} tokens/s, decode area {p.decode_area_mm2:.4f} mm2")


def _front_svg(result: ExploreResult, metric: str) -> str:
    """bpw vs the measured output error where every point shown was validated end to end (the
    requested budgets and the uniform formats), else vs the scenario's error (the whole front)."""
    validated = [p for p in result.front if p.validation is not None]
    if validated and all(b.validation is not None for b in result.baselines):
        front, ylabel = sorted(validated, key=lambda p: p.bpw), f"{judged_label(validated[0])}, held-out text (log)"
    else:
        front, ylabel = sorted(result.front, key=lambda p: p.bpw), f"{metric} (log)"
    pts = front + list(result.baselines)
    ax = _Axes([p.bpw for p in pts], [judged(p) for p in pts if judged(p) > 0], log=True)
    out = [f"<svg id='front' xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}' "
           f"viewBox='0 0 {_W} {_H}' role='img' aria-label='error vs bits per weight'>"]
    out += ax.frame("bits per weight [bit]", ylabel)
    line = " ".join(f"{ax.x(p.bpw):.1f},{ax.y(judged(p)):.1f}" for p in front)
    out.append(f"<polyline points='{line}' fill='none' stroke='{_FRONT}' stroke-width='1.5'/>")
    for p in front:
        out.append(f"<circle cx='{ax.x(p.bpw):.1f}' cy='{ax.y(judged(p)):.1f}' r='3.5' fill='{_FRONT}'>"
                   f"<title>{_tip(p, 'front (' + p.source + ')')}</title></circle>")
    heights = spread_labels([(p.bpw, judged(p)) for p in result.baselines], gap_decades=0.06)
    for p, label_y in zip(result.baselines, heights):
        x, y, name = ax.x(p.bpw), ax.y(judged(p)), uniform_name(p)
        found = aliases.aliases_of(name)
        label = name + (f" = {found[0]}" if found else "")
        right = x > 0.75 * _W  # labels near the right edge go to the left of their mark
        ly = ax.y(label_y)
        out.append(f"<g><path d='M{x - 4:.1f},{y - 4:.1f}L{x + 4:.1f},{y + 4:.1f}M{x - 4:.1f},{y + 4:.1f}"
                   f"L{x + 4:.1f},{y - 4:.1f}' stroke='{_UNIFORM}' stroke-width='1.5'/>"
                   f"<line x1='{x:.1f}' y1='{y:.1f}' x2='{x + (-10 if right else 10):.1f}' y2='{ly:.1f}' stroke='#bbb'/>"
                   f"<text x='{x + (-12 if right else 12):.1f}' y='{ly + 4:.1f}' fill='#555' "
                   f"text-anchor='{'end' if right else 'start'}'>{_e(label)}</text>"
                   f"<title>{_tip(p, 'uniform ' + label)}</title></g>")
    out.append(f"<text x='{_W - _PAD[1] - 4}' y='{_PAD[2] + 14}' text-anchor='end' fill='{_FRONT}'>"
               "&#9679; Pareto front (per-tensor formats)</text>"
               f"<text x='{_W - _PAD[1] - 4}' y='{_PAD[2] + 28}' text-anchor='end' fill='{_UNIFORM}'>"
               "&#215; one format everywhere</text></svg>")
    return "".join(out)


def _cost_svg(result: ExploreResult) -> str:
    """Second panel: energy per token and tokens/s of the front points, each on its own scale."""
    front = sorted(result.front, key=lambda p: p.bpw)
    out = [f"<svg id='cost' xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H // 2 + 40}' "
           f"viewBox='0 0 {_W} {_H // 2 + 40}'>"]
    for row, (label, key, color) in enumerate((("energy [mJ/token]", lambda p: p.energy_j_per_token * 1e3, "#2ca02c"),
                                               ("tokens/s (bound)", lambda p: p.tokens_per_s, "#9467bd"))):
        values = [key(p) for p in front]
        lo, hi = min(values), max(values)
        top, height = 20 + row * (_H // 4 + 10), _H // 4 - 10
        def y(v: float) -> float:  # noqa: E306 - one scale per row
            return top + height - (v - lo) / ((hi - lo) or 1.0) * height
        ax = _Axes([p.bpw for p in front], [1.0], log=False)
        pts = " ".join(f"{ax.x(p.bpw):.1f},{y(key(p)):.1f}" for p in front)
        out.append(f"<polyline points='{pts}' fill='none' stroke='{color}' stroke-width='1.5'/>"
                   f"<text x='{_PAD[0]}' y='{top - 4}' fill='{color}'>{_e(label)}: {fixed(lo)} .. {fixed(hi)}</text>")
    out.append("</svg>")
    return "".join(out)


def _front_table(result: ExploreResult, hw: Hardware) -> str:
    checked = next((p for p in result.front if p.validation is not None), None)
    rows = ["<table><tr><th>bpw [bit]</th><th>error</th>"
            + (f"<th>{judged_label(checked)}</th>" if checked else "")
            + "<th>energy [mJ/token]</th><th>tokens/s</th>"
            "<th>decode units</th><th>decode area [mm2]</th><th>point</th><th>formats</th></tr>"]
    points = [(p, p.source, ", ".join(f"{n} x{k}" for n, k in sorted(_count(p).items(), key=lambda i: -i[1])))
              for p in result.front if p.source.startswith("ilp")]
    points += [(p, "uniform", uniform_name(p)) for p in result.baselines]
    for p, kind, formats in points:
        measured = "" if checked is None else (
            f"<td class='n'>{fmt_measured(p)}</td>")
        rows.append(f"<tr><td class='n'>{p.bpw:.4f}</td><td class='n'>{fixed(p.error)}</td>{measured}"
                    f"<td class='n'>{p.energy_j_per_token * 1e3:.4f}</td><td class='n'>{p.tokens_per_s:,.0f}</td>"
                    f"<td class='n'>{len(decode_units(p, hw))}</td><td class='n'>{p.decode_area_mm2:.4f}</td>"
                    f"<td>{kind}</td><td>{_e(formats)}</td></tr>")
    return "".join(rows) + "</table>"


def _count(p: FrontPoint) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in p.assignment.values():
        out[c] = out.get(c, 0) + 1
    return out


def _color(bpw: float, lo: float, hi: float) -> str:
    """A viridis-like ramp (dark blue: fewest bits, yellow: most)."""
    stops = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    t = 0.0 if hi <= lo else (bpw - lo) / (hi - lo)
    i = min(int(t * 4), 3)
    f = t * 4 - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(stops[i], stops[i + 1]))
    return f"rgb({r},{g},{b})"


def _heatmap(grid: BitsGrid, title: str) -> str:
    keys = grid.letters()
    values = [v for row in grid.bpw for v in row if not math.isnan(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    out = [f"<h3>{_e(title)}</h3><table class='hm'><tr><th>layer</th>"
           + "".join(f"<th>{_e(r)}</th>" for r in grid.roles) + "</tr>"]
    for i, layer in enumerate(grid.layers):
        cells = []
        for j in range(len(grid.roles)):
            c = grid.candidate[i][j]
            cells.append("<td style='background:#eee'>-</td>" if c is None else
                         f"<td style='background:{_color(grid.bpw[i, j], lo, hi)}' title='{_e(c)}'>"
                         f"{grid.bpw[i, j]:.2f} {keys[c]}</td>")
        out.append(f"<tr><th>L{layer}</th>{''.join(cells)}</tr>")
    out.append("</table><p>" + "; ".join(f"{k} = {_e(n)}" for n, k in keys.items()) + "</p>")
    if grid.others:
        out.append("<p>Outside the layers: " + "; ".join(f"{_e(t)}: {_e(c)} ({b:.4f} bpw)"
                                                         for t, c, b in grid.others) + "</p>")
    return "".join(out)
