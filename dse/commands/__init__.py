"""Subcommands of ``dse``, one module each; add a module here to add a command."""

from dse.commands import formats, measure

COMMANDS = (formats, measure)
