"""Errors of the weight and statistics sources: one line naming the file (and tensor) and the fix."""

from quant.errors import DseError


class SourceError(DseError):
    """A weight or statistics source that cannot be found or read (missing, corrupt, truncated)."""
