"""The ``dse`` command line: a thin layer over the library packages.

Each subcommand lives in ``dse/commands/<name>.py`` and exposes ``register(subparsers)``; its
handler loads inputs, calls the library and renders.

Exit statuses (README "Guarantees"): 0 success, also when stdout is a pipe closed early
(``dse ... | head -1``); 2 a user mistake (``DseError``, a path naming the wrong kind of file,
input that is not UTF-8 text or nests too deeply), one ``dse: error:`` line each; 1 an
environment failure (full disk, read-only or unwritable place, out of memory), one line;
130 Ctrl-C; 143 SIGTERM. No traceback escapes for any of these.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO

from dse.commands import COMMANDS
from dse.package import tool_version
from quant.errors import DseError, EnvironmentFailure

MAX_LINE = 400
"""Characters of one error line; a longer message is cut (a user value is never echoed whole)."""

# A path that names the wrong thing is the user's mistake; everything else the OS refuses is the
# environment's (a full disk, a read-only mount, missing permissions, no memory).
_USER_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP,
                errno.ENOTEMPTY}


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that ``finally`` blocks run and pools shut down."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``dse: error:`` line like every other (exit 2)."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{self.prog}: {message} (see {self.prog} --help)", 2)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dse",
        description="sop-dse: design-space exploration of LUT-decoded LLM weight formats.",
        epilog="examples:\n  dse explore scenarios/edge.yaml\n  dse measure NVFP4 MXFP4 Q4_0 --weights minilm --totals-only\n"
               "  dse COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {tool_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _pipe_safe_stdout(), _sigterm_raises():
        try:
            return int(args.handler(args) or 0)
        except DseError as err:
            return _fail(str(err), 1 if isinstance(err, EnvironmentFailure) else 2)
        except OSError as err:
            return _fail(os_error_message(err), 2 if err.errno in _USER_ERRNOS else 1)
        except UnicodeDecodeError as err:
            return _fail(f"input is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                         "save the file as UTF-8", 2)
        except RecursionError:
            return _fail("input nested too deeply; flatten the YAML/JSON structure", 2)
        except MemoryError:
            return _fail("out of memory; free memory, or lower --jobs or the model size", 1)
        except KeyboardInterrupt:
            print("dse: interrupted", file=sys.stderr)
            return 130
        except Terminated:
            print("dse: terminated (SIGTERM); files already written are complete", file=sys.stderr)
            return 128 + signal.SIGTERM


def os_error_message(err: OSError) -> str:
    """One line for an OSError: the path, the reason, and what to do."""
    where = f"{err.filename}: " if err.filename is not None else ""
    reason = err.strerror or type(err).__name__
    fix = {
        errno.ENOSPC: "free disk space or write elsewhere (--out)",
        errno.EDQUOT: "free disk space or write elsewhere (--out)",
        errno.EROFS: "the place is read-only; write elsewhere (--out)",
        errno.EACCES: "no permission; write elsewhere (--out) or fix the permissions",
        errno.EPERM: "no permission; write elsewhere (--out) or fix the permissions",
        errno.EISDIR: "name a file, not a directory",
        errno.ENOTDIR: "a part of this path is a file; name a directory",
        errno.ENOENT: "check the path",
        errno.EEXIST: "exists and is in the way; remove it or choose another path",
    }.get(err.errno or 0, "check the path and retry")
    return f"{where}{reason}; {fix}"


def _fail(message: str, status: int) -> int:
    for line in message.splitlines() or [""]:  # a scenario may have several problems: one line each
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE - 1] + "…"
        print(f"dse: error: {line}", file=sys.stderr)
    return status


class _PipeSafe(io.TextIOBase):
    """stdout that turns a reader gone away (``| head -1``) into silence: the command still runs
    to completion (explore still writes its files) and exits 0."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_pipe = False

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.closed_pipe = True
        try:  # so that the interpreter's final flush of fd 1 does not complain either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def _pipe_safe_stdout() -> Iterator[None]:
    original = sys.stdout
    sys.stdout = _PipeSafe(original)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = original


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
