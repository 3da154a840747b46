"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse


def add_scheduler_argument(parser: argparse.ArgumentParser) -> None:
    """``--scheduler ADDRESS``: run the per-tensor jobs on a Dask cluster (docs/scale-out.md)."""
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run per-tensor jobs on a Dask cluster: a scheduler address such as "
                             "tcp://10.0.0.5:8786, or 'local' for a Dask LocalCluster on this machine "
                             "(default: this machine's process pool)")
