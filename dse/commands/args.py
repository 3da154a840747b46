"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """An argparse type: a positive integer in ASCII digits (``--jobs 2``)."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text[:20]!r}")
    return int(text)


def seed(text: str) -> int:
    """An argparse type: a random seed, 0 to 2**64 - 1 in ASCII digits (numpy's range)."""
    if not (text.isascii() and text.isdigit()) or int(text) >= 1 << 64:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**64-1, got {text[:20]!r}")
    return int(text)


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``--show 4.5``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text[:20]!r}")
    return value


def add_scheduler_argument(parser: argparse.ArgumentParser) -> None:
    """``--scheduler ADDRESS``: run the per-tensor jobs on a Dask cluster (docs/scale-out.md)."""
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run per-tensor jobs on a Dask cluster: a scheduler address such as "
                             "tcp://10.0.0.5:8786, or 'local' for a Dask LocalCluster on this machine "
                             "(default: this machine's process pool)")
