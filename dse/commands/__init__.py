"""Subcommands of ``dse``, one module each; add a module here to add a command."""

from dse.commands import cost, evaluate, explore, export, formats, measure, models, quantize

COMMANDS = (formats, measure, cost, models, explore, quantize, evaluate, export)
