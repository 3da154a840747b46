"""The ``dse`` command line: a thin layer over the library packages.

Each subcommand lives in ``dse/commands/<name>.py`` and exposes ``register(subparsers)``; its
handler loads inputs, calls the library and renders. User mistakes (``DseError``) print one line
and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dse.commands import COMMANDS
from quant.errors import DseError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dse",
        description="sop-dse: design-space exploration of LUT-decoded LLM weight formats.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except DseError as err:
        for line in str(err).splitlines():  # a scenario may have several problems: one line each
            print(f"dse: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
