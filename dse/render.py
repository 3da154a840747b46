"""Rendering helpers shared by the subcommands: one rich Console, JSON output, tables that fit.

Tables printed by :func:`fit_table` fit any terminal at least 80 columns wide: numbers are
printed in fixed notation (never ``1.2e+03``), candidate and tensor names are never cut in the
middle (a list of names wraps between names), and when the terminal is too narrow the
columns a table marks optional are left out and named under it. A wide terminal gets every
column at full width.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from quant import Candidate

NON_TTY_WIDTH = 160
"""Columns when stdout is not a terminal and COLUMNS is not set (a log file or a pipe)."""


def console() -> Console:
    """The console subcommands print to: stdout, as wide as COLUMNS, else the terminal, else 160."""
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 0 else (
        None if sys.stdout.isatty() else NON_TTY_WIDTH)
    return Console(highlight=False, width=width)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (PNG files, no display). Imported on first use: it
    costs ~0.9 s, which runs that draw nothing should not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def print_json(payload: Any) -> None:
    """Write ``payload`` as JSON to stdout; non-finite floats become null (valid JSON)."""
    json.dump(_finite(payload), sys.stdout, indent=2)
    sys.stdout.write("\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def fixed(x: float, significant: int = 4) -> str:
    """``x`` in fixed notation with about ``significant`` significant digits: 448.3, 1040,
    0.005480, 12,345 (thousands separated; never exponent notation); '-' when not finite."""
    if not math.isfinite(x):
        return "-"
    if x == 0:
        return "0"
    decimals = max(0, significant - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{min(decimals, 9)}f}"


def table(title: str, columns: list[str], left: int = 1) -> Table:
    """A rich Table whose headers are literal text (units in [brackets] are not markup);
    the first ``left`` columns are left-aligned, the rest (numbers) right-aligned."""
    out = Table(title=title)
    for i, name in enumerate(columns):
        out.add_column(Text(name), justify="left" if i < left else "right")
    return out


@dataclass(frozen=True)
class Col:
    """One column of a :func:`fit_table`."""

    header: str
    kind: str = "num"
    """'num' (right-aligned, one token), 'name' (left, one unbreakable name) or 'list'
    (left, names separated by ', ' that may wrap between names)."""
    optional: bool = False
    """May be left out on a narrow terminal (the last optional column goes first)."""


_BORDER = 3  # per column: a vertical rule and one space of padding either side


def fit_table(console: Console, title: str, cols: Sequence[Col], rows: Iterable[Sequence[str]],
              sections: Sequence[int] = ()) -> Table:
    """A table laid out for ``console.width``: see the module docstring.

    ``rows`` hold one string per column; ``sections`` are row indices that start a new section.
    A note under the table names any column left out.
    """
    rows = [list(r) for r in rows]
    cols = list(cols)
    shown = list(range(len(cols)))
    natural, minimum = [], []
    for i, c in enumerate(cols):
        cells = [r[i] for r in rows]
        tokens = [t for cell in cells for t in (cell.split(", ") if c.kind == "list" else [cell])]
        head_word = max((len(w) for w in c.header.split()), default=1)
        natural.append(max([len(c.header), *map(len, cells)]))
        minimum.append(max([head_word, *(len(t) + (1 if c.kind == "list" else 0) for t in tokens)]))
    budget = console.width - 1
    while True:
        widths = {i: natural[i] for i in shown}
        over = sum(widths.values()) + _BORDER * len(shown) - budget
        for i in sorted(shown, key=lambda i: cols[i].kind == "list"):  # wrap headers before name lists
            if over <= 0:
                break
            cut = min(over, widths[i] - minimum[i])
            widths[i] -= cut
            over -= cut
        optional = [i for i in shown if cols[i].optional]
        if over <= 0 or not optional:
            break
        shown.remove(optional[-1])
    hidden = [cols[i].header for i in range(len(cols)) if i not in shown]
    out = Table(title=Text(title), caption=Text(f"(narrow terminal: hidden {', '.join(hidden)}; widen it or use --json)")
                if hidden else None)
    for i in shown:
        c = cols[i]
        out.add_column(Text(c.header), justify="right" if c.kind == "num" else "left", width=widths[i],
                       overflow="fold")  # cells are never wider than the column: only headers wrap
    for n, r in enumerate(rows):
        if n in sections and n > 0:
            out.add_section()
        out.add_row(*(Text(_wrap_list(r[i], widths[i]) if cols[i].kind == "list" else r[i]) for i in shown))
    return out


def _wrap_list(cell: str, width: int) -> str:
    """Break a ', '-separated list of names into lines of at most ``width`` between names."""
    lines: list[str] = []
    for item in cell.split(", "):
        if lines and len(lines[-1]) + 2 + len(item) <= width - 1:
            lines[-1] += ", " + item
        else:
            if lines:
                lines[-1] += ","
            lines.append(item)
    return "\n".join(lines)


def short_tensor_names(names: Sequence[str]) -> tuple[dict[str, str], str]:
    """Short display names for tensor names, and the rule used (for a note under a table).

    Rule: a tensor in layer L with role R (models.roles) is ``L<L>.<R>`` (``.e<E>`` for expert E);
    a tensor outside the layers is its last name component (``word_embeddings``); a source prefix
    ``SOURCE/`` is kept. A short name two tensors would share is not used: both keep their full names.
    """
    from models.roles import parse_name

    short = {}
    for name in names:
        prefix, _, inner = name.rpartition("/")
        key = parse_name(inner)
        if key.layer is not None and key.role != "other":
            s = f"L{key.layer}.{key.role}" + (f".e{key.expert}" if key.expert is not None else "")
        else:
            parts = [p for p in inner.split(".") if p not in ("weight", "bias")]
            s = parts[-1] if parts else inner
        short[name] = f"{prefix}/{s}" if prefix else s
    counts: dict[str, int] = {}
    for s in short.values():
        counts[s] = counts.get(s, 0) + 1
    out = {name: (s if counts[s] == 1 else name) for name, s in short.items()}
    return out, "tensor names shortened: L<layer>.<role> (q k v o gate up down ...), others by their last name part"


def placeholder_lines(candidates: Iterable[Candidate]) -> list[str]:
    """One line per reconstructed grid the candidates use, for the foot of a report."""
    notes = dict.fromkeys(note for c in candidates for note in c.placeholders)
    return [f"placeholder {note}" for note in notes]
