"""Rendering helpers shared by the subcommands: one rich Console, JSON output."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console


def console() -> Console:
    """The console subcommands print to (stdout; no colour when not a terminal)."""
    return Console(highlight=False)


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
