"""One front per model: a scenario naming several weight sources is explored model by model.

Pooling models into one front would let the largest model decide every choice and quote one
tokens/s for models that run apart, so each installed source gets its own exploration, output
folder (``<output.dir>/<source>``) and report; the measurement cache stays shared.
"""

from __future__ import annotations

import re
from dataclasses import replace

from dse.scenario import Scenario, resolve_input

from models.sources import open_source
from models.errors import SourceError


def slug(spec: str) -> str:
    """A folder name for a source spec: ``minilm``, ``llama-3.1-8b-synthetic``, ``w.safetensors``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", spec.rstrip("/").rpartition("/")[2]).strip("-") or "model"


def per_model(s: Scenario) -> tuple[list[Scenario], list[str]]:
    """(one scenario per installed source, optional sources skipped as not installed).

    A scenario with a single source is returned as it is.
    """
    specs = list(s.weights) + list(s.optional_weights)
    if len(specs) == 1:
        return [s], []
    out, skipped = [], []
    for spec in specs:
        if spec in s.optional_weights:
            try:
                open_source(resolve_input(s.path.parent, spec))
            except SourceError:
                skipped.append(spec)
                continue
        out.append(replace(s, weights=(spec,), optional_weights=(), output_dir=s.output_dir / slug(spec)))
    return out, skipped
