"""The notebook API: everything a Python user needs, from one import.

::

    import dse
    s = dse.load_scenario("scenarios/edge.yaml")        # or dse.scenario_from_dict({...})
    r = dse.explore(s)
    r.front_frame()                                     # pandas: bpw, error, energy_j_per_token, ...
    r.measurements                                      # pandas: one row per (tensor, candidate)
    dse.write_outputs(r)                                # pareto.csv/json, measurements.csv, configs, plot
    dse.measure_source("minilm", ["E2M3sUE4M4"])        # pandas: one row per (tensor, candidate) + totals
    dse.model_cost([(t, dse.parse_candidate("E2M3sUE4M4")) for t in dse.weight_tensors(dse.get_model("llama-3.1-8b"))],
                   dse.preset("hbm3")).tokens_per_s
    dse.quantize_package("out/edge/config-4.5000.yaml", None, Path("packed"))
    dse.verify_package(Path("packed"))

User mistakes raise :class:`DseError` (a :class:`ScenarioError` for scenarios) with one line per problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dse.allocation import FrontPoint
from dse.measurement import activation_source
from dse.measurement import measure_source as _measure_source
from dse.package import quantize_package, verify_package
from dse.pipeline import ExploreResult, explore
from dse.report import write_outputs
from dse.scenario import HardwareSpec, Scenario, ScenarioError, load_scenario, parse, read_yaml, scenario_from_dict
from dse.setup import setup_problems
from hwcost import Hardware, candidate_cost, load_hardware, model_cost, preset, tensor_cost, weight_tensors
from models.catalog import get_model
from models.source import WeightSource
from models.sources import open_source
from quant import Candidate, measure, parse_candidate
from quant.errors import DseError


def validate(scenario: str | Path | Mapping[str, Any]) -> list[str]:
    """Every problem of a scenario file or mapping, one ``origin: field: problem (fix)`` line each
    (empty: it will run). Opens the sources and builds the hardware, but measures nothing."""
    if isinstance(scenario, Mapping):
        raw, origin = dict(scenario), "<dict>"
    else:
        raw, origin = read_yaml(scenario), str(scenario)
    s, problems, broken = parse(raw, origin)
    return [f"{origin}: {p}" for p in problems + setup_problems(s, broken)]


def measure_source(weights: str | WeightSource, candidates: Sequence[str | Candidate], *,
                   act: str | None = None, act_power: int = 2, sample_fraction: float | None = None,
                   threads: int | None = None) -> pd.DataFrame:
    """Each candidate's error on every tensor of a source, plus an element-weighted total row
    per candidate (``tensor`` = ``*``): the records ``dse measure --json`` prints.

    Args:
        weights: a source spec (``minilm``, a .safetensors/.gguf path, ``MODEL:synthetic``...) or
            an open :class:`WeightSource`.
        candidates: names (``E2M3sUE4M4``) or parsed candidates.
        act: activation statistics (``minilm``, an imatrix, a .safetensors/.npz of vectors).
        act_power: h = c**act_power for the per-channel norm c.
        sample_fraction: estimate from a seeded sample of row groups (None: exact).
    Returns:
        Columns ``candidate``, ``tensor``, ``numel``, ``bpw`` [bit/weight], ``mse``, ``rel_mse``,
        ``sqnr_db`` [dB], ``cosine``, ``cos_deficit_ppm`` [ppm], ``second_grid_fraction``,
        ``sparse_entries``, ``prequantized``; with ``act`` also ``act_mse``, ``act_rel_mse``,
        ``acos_deficit_ppm``; sampled also ``rel_mse_ci95``.
    """
    source = open_source(weights) if isinstance(weights, str) else weights
    parsed = [parse_candidate(c) if isinstance(c, str) else c for c in candidates]
    rows = _measure_source(source, parsed, threads=threads, sample_fraction=sample_fraction,
                           act=None if act is None else activation_source(act, act_power))
    return pd.DataFrame([m.record() for m in rows])


__all__ = [
    "Candidate", "DseError", "ExploreResult", "FrontPoint", "Hardware", "HardwareSpec", "Scenario", "ScenarioError",
    "candidate_cost", "explore", "get_model", "load_hardware", "load_scenario", "measure",
    "measure_source", "model_cost", "open_source", "parse_candidate", "preset", "quantize_package",
    "scenario_from_dict", "tensor_cost", "validate", "verify_package", "weight_tensors", "write_outputs",
]
