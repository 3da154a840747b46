"""Errors a user can cause. Each message is one line that names the thing at fault and the fix.

The CLI prints ``dse: error: <message>`` and exits 2 for any of these; anything else is a bug
and keeps its traceback.
"""


class DseError(Exception):
    """A user mistake or bad input: reported in one line, never with a traceback."""


class UnknownFormatError(DseError):
    """An atom, scale or candidate name that is not registered."""


class CandidateError(DseError):
    """A candidate name that parses but describes an impossible combination."""


class WeightError(DseError):
    """A weight tensor that cannot be quantized as given (NaN/Inf, bad shape, bad block)."""
