"""Rendering helpers shared by the subcommands: one rich Console, JSON output."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from quant import Candidate


def console() -> Console:
    """The console subcommands print to: stdout, and 140 columns wide when not a terminal."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


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


def fmt_sci(x: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(x) else f"{x:.{digits}e}"


def table(title: str, columns: list[str], left: int = 1) -> Table:
    """A rich Table whose headers are literal text (units in [brackets] are not markup);
    the first ``left`` columns are left-aligned, the rest (numbers) right-aligned."""
    out = Table(title=title)
    for i, name in enumerate(columns):
        out.add_column(Text(name), justify="left" if i < left else "right")
    return out


def placeholder_lines(candidates: Iterable[Candidate]) -> list[str]:
    """One line per reconstructed grid the candidates use, for the foot of a report."""
    notes = dict.fromkeys(note for c in candidates for note in c.placeholders)
    return [f"placeholder {note}" for note in notes]
