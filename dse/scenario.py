"""Scenario files: validated here (pydantic, at the boundary only), then turned into plain data.

``load_scenario(path)`` returns a frozen :class:`Scenario` or raises :class:`ScenarioError`
listing every problem at once, one line each: ``file: field.path: problem (fix)``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quant import Candidate, parse_candidate
from quant.errors import DseError


class ScenarioError(DseError):
    """A scenario file with problems; the message has one line per problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Strict):
    weights: str | list[str] = Field(description="weight source(s): minilm, a .safetensors file or dir, "
                                                 "<catalog-id>:synthetic, synthetic:gaussian ...")
    optional_weights: list[str] = Field(default=[], description="sources used when installed, skipped otherwise")
    activations: str | None = Field(default=None, description="per-channel mean squared activations: minilm, "
                                                              "an imatrix .gguf/.dat, a .safetensors/.npz file")
    act_power: Literal[1, 2] = Field(default=2, description="h = c**act_power for channel norm c (2: diag X^T X)")
    include: str | None = Field(default=None, description="regex: only tensors whose name matches")
    exclude: str | None = Field(default=None, description="regex: drop tensors whose name matches")
    sample_fraction: float | None = Field(default=None, gt=0, le=1,
                                          description="measure a seeded sample of rows per tensor (large models)")


class ProductSection(_Strict):
    atoms: list[str] = Field(min_length=1)
    scales: list[str] = Field(min_length=1)
    blocks: list[int | Literal["layer"]] = Field(default=[16], min_length=1)
    options: list[str] = Field(default=[""], description="option suffixes, e.g. ':aw' or ''")
    corrections: list[str] = Field(default=[""], description="correction suffixes, e.g. '+res(0.5%)' or ''")


class CandidatesSection(_Strict):
    names: list[str] = Field(default=[])
    product: ProductSection | None = None


class HardwareSection(_Strict):
    preset: str | None = Field(default=None, description="memory/hardware preset, e.g. lpddr5x, hbm3e")
    file: str | None = Field(default=None, description="hardware YAML (hwcost fields)")
    fields: dict[str, Any] = Field(default={}, description="hwcost hardware fields overriding the preset")
    lut_sram_bits_per_layer: int | None = Field(default=None, gt=0,
                                                description="LUT SRAM per layer; candidates whose LUT needs more are errors")


class ObjectiveSection(_Strict):
    metric: Literal["sse", "act_sse", "rel_mse"] = Field(
        default="sse", description="per-tensor error summed by the optimizer: squared error, "
                                   "activation-weighted squared error, or numel x relative MSE")


class BpwRange(_Strict):
    min_bpw: float = Field(gt=0)
    max_bpw: float = Field(gt=0)
    points: int = Field(default=21, ge=2, le=1000)


class BudgetsSection(_Strict):
    bpw: list[float] | None = Field(default=None, description="bit budgets in bits per weight")
    bpw_range: BpwRange | None = None
    energy_j_per_token_max: float | None = Field(default=None, gt=0)
    decode_area_mm2_max: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_budget_list(self) -> BudgetsSection:
        if (self.bpw is None) == (self.bpw_range is None):
            raise ValueError("give exactly one of bpw (a list) or bpw_range (min_bpw, max_bpw, points)")
        if self.bpw_range is not None and self.bpw_range.max_bpw <= self.bpw_range.min_bpw:
            raise ValueError("bpw_range.max_bpw must exceed min_bpw")
        if self.bpw is not None and (not self.bpw or min(self.bpw) <= 0):
            raise ValueError("bpw must be a non-empty list of positive numbers")
        return self


class OutputSection(_Strict):
    dir: str = Field(default="out", description="output directory (dse explore --out overrides)")
    plot: bool = True
    cache_dir: str | None = Field(default=None, description="measurement cache; default <dir>/../.dse-cache")


class SolverSection(_Strict):
    backend: Literal["cbc", "highs"] = "cbc"
    time_limit_s: float = Field(default=60.0, gt=0)


class _ScenarioModel(_Strict):
    description: str = ""
    model: ModelSection
    candidates: CandidatesSection
    hardware: HardwareSection
    objective: ObjectiveSection = ObjectiveSection()
    budgets: BudgetsSection
    groups: list[list[str]] = Field(default=[], description="roles that share one format within a layer, "
                                                             "e.g. [[q, k, v], [gate, up]]")
    output: OutputSection = OutputSection()
    solver: SolverSection = SolverSection()


@dataclass(frozen=True)
class Scenario:
    """A validated scenario, as the explore driver uses it."""

    path: Path
    description: str
    weights: tuple[str, ...]
    optional_weights: tuple[str, ...]
    activations: str | None
    act_power: int
    include: str | None
    exclude: str | None
    sample_fraction: float | None
    candidates: tuple[Candidate, ...]
    hardware: HardwareSection
    metric: str
    budgets_bpw: tuple[float, ...]
    energy_j_per_token_max: float | None
    decode_area_mm2_max: float | None
    groups: tuple[tuple[str, ...], ...]
    output_dir: Path
    plot: bool
    cache_dir: Path
    solver_backend: str
    solver_time_limit_s: float


def load_scenario(path: str | Path, *, out: str | None = None) -> Scenario:
    """Read and validate a scenario file; every problem is reported in one ScenarioError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ScenarioError(f"{path}:{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping with model, candidates, hardware, budgets")
    try:
        model = _ScenarioModel.model_validate(raw)
    except ValidationError as err:
        raise ScenarioError("\n".join(f"{path}: {_loc(e['loc'])}: {_message(e)}" for e in err.errors())) from None
    problems: list[str] = []
    candidates = _candidates(model.candidates, problems)
    for field_name, pattern in (("model.include", model.model.include), ("model.exclude", model.model.exclude)):
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as err:
                problems.append(f"{field_name}: invalid regex ({err})")
    hw = model.hardware
    if (hw.preset is None) == (hw.file is None):
        problems.append("hardware: give exactly one of preset (e.g. lpddr5x) or file (a hardware YAML)")
    if problems:
        raise ScenarioError("\n".join(f"{path}: {p}" for p in problems))
    budgets = model.budgets
    bpw = budgets.bpw if budgets.bpw is not None else _range(budgets.bpw_range)
    out_dir = Path(out) if out else (path.parent / model.output.dir if not Path(model.output.dir).is_absolute()
                                     else Path(model.output.dir))
    cache = Path(model.output.cache_dir) if model.output.cache_dir else out_dir.parent / ".dse-cache"
    weights = (model.model.weights,) if isinstance(model.model.weights, str) else tuple(model.model.weights)
    return Scenario(
        path=path, description=model.description, weights=weights,
        optional_weights=tuple(model.model.optional_weights), activations=model.model.activations,
        act_power=model.model.act_power, include=model.model.include, exclude=model.model.exclude,
        sample_fraction=model.model.sample_fraction, candidates=tuple(candidates), hardware=hw,
        metric=model.objective.metric, budgets_bpw=tuple(sorted(set(bpw))),
        energy_j_per_token_max=budgets.energy_j_per_token_max, decode_area_mm2_max=budgets.decode_area_mm2_max,
        groups=tuple(tuple(g) for g in model.groups), output_dir=out_dir, plot=model.output.plot,
        cache_dir=cache, solver_backend=model.solver.backend, solver_time_limit_s=model.solver.time_limit_s,
    )


def _range(r: BpwRange | None) -> list[float]:
    assert r is not None
    step = (r.max_bpw - r.min_bpw) / (r.points - 1)
    return [round(r.min_bpw + i * step, 6) for i in range(r.points)]


def _candidates(section: CandidatesSection, problems: list[str]) -> list[Candidate]:
    names = [("candidates.names", i, n) for i, n in enumerate(section.names)]
    if section.product is not None:
        p = section.product
        for i, (atom, scale, block, opt, corr) in enumerate(
            itertools.product(p.atoms, p.scales, p.blocks, p.options, p.corrections)
        ):
            names.append(("candidates.product", i, f"{atom}s{scale}@{block}{opt}{corr}"))
    if not names:
        problems.append("candidates: list names and/or a product (atoms x scales x blocks); none given")
    out: dict[str, Candidate] = {}
    for where, i, name in names:
        try:
            c = parse_candidate(name)
        except DseError as err:
            problems.append(f"{where}[{i}]: {err}")
            continue
        out.setdefault(c.name, c)  # the same candidate written twice is measured once
    return list(out.values())


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see README 'Scenario files')"
    if kind == "missing":
        return "required field missing"
    return str(error["msg"]).replace("Value error, ", "")
