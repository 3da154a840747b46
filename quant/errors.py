"""Errors a user can cause. Each message is one line that names the thing at fault and the fix.

The CLI prints ``dse: error: <message>`` and exits 2 for any of these (1 for an
``EnvironmentFailure``). Messages quote user values through :func:`brief`, never whole.
"""


class DseError(Exception):
    """A user mistake or bad input: reported in one line, never with a traceback."""


class UnknownFormatError(DseError):
    """An atom, scale or candidate name that is not registered."""


class CandidateError(DseError):
    """A candidate name that parses but describes an impossible combination."""


class WeightError(DseError):
    """A weight tensor that cannot be quantized as given (NaN/Inf, bad shape, bad block)."""


class EnvironmentFailure(DseError):
    """Not the user's input but the machine: a full disk, a read-only place. The CLI exits 1."""


def brief(value: object, limit: int = 60) -> str:
    """A short repr of a user value for a message: never the whole of it (a YAML alias bomb's repr
    would not fit in memory), at most ``limit`` characters."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother = 2, limit, limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 4
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
