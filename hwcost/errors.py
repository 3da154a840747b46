"""Errors a user can cause in hwcost: one line naming the file or field at fault and the fix."""

from quant.errors import DseError


class HardwareError(DseError):
    """A hardware preset, YAML file or field that cannot be used as given."""
