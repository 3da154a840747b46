"""Scenarios: every rule about a scenario, and the plain frozen data the library works on.

pydantic checks field types at the boundary only; :func:`parse` turns a mapping into a frozen
:class:`Scenario` (with a :class:`HardwareSpec`, never a pydantic object) and lists every problem
it finds, one line each: ``file: field.path: problem (fix)``. A broken section does not stop the
others from being checked. :func:`cross_problems` holds the rules that need the model's tensors
and the hardware (a metric that needs statistics some tensor lacks, groups naming absent roles,
LUT capacity, block sizes); the setup step (:mod:`dse.setup`) gathers those facts and calls it,
so one ``dse validate`` reports everything.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from dse.files import read_document
from quant import Candidate, parse_candidate
from quant.errors import DseError, brief


class ScenarioError(DseError):
    """A scenario file with problems; the message has one line per problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    sensitivity: str | None = Field(default=None, description="per-tensor output gains (CSV or JSON) for "
                                                              "objective.metric: output, measured elsewhere")


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
                                                description="LUT SRAM per layer; candidates whose LUT needs more are excluded")


class ObjectiveSection(_Strict):
    metric: Literal["sse", "act_sse", "rel_mse", "output"] = Field(
        default="sse", description="per-tensor error summed by the optimizer: squared error, "
                                   "activation-weighted squared error, numel x relative MSE, or the "
                                   "predicted model output error (measured gain x squared error)")
    output_errors: Literal["gain", "table"] = Field(
        default="gain", description="output metric: one measured gain per tensor, or the measured output "
                                    "error of every (tensor, candidate) pair (small models)")


class BpwRange(_Strict):
    min_bpw: float = Field(gt=0)
    max_bpw: float = Field(gt=0)
    points: int = Field(default=21, ge=2, le=1000)


class BudgetsSection(_Strict):
    bpw: list[float] | None = Field(default=None, description="bit budgets in bits per weight")
    basis: Literal["stored", "streamed"] = Field(
        default="stored", description="what a budget limits: the bits stored (capacity) or the bits read per "
                                      "decode token (an embedding is read one row per token)")
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
    validation: bool | None = Field(default=None, description="measure every requested-budget point end to end on "
                                                               "held-out text (default: with objective.metric output)")
    cache_dir: str | None = Field(default=None, description="measurement cache; default <dir>/../.dse-cache")


class SolverSection(_Strict):
    backend: Literal["highs", "cbc"] = Field(default="highs", description="MIP solver: HiGHS (highspy) or "
                                                                          "PuLP's bundled CBC")
    time_limit_s: float = Field(default=20.0, gt=0, description="per budget; then the best answer is kept "
                                                               "with its proven gap")
    gap_rel: float = Field(default=1e-4, ge=0, lt=1, description="a budget is solved when its answer is "
                                                                "proven this close to optimal (relative)")


class ExecutorSection(_Strict):
    scheduler: str | None = Field(default=None, description="Dask scheduler address (tcp://host:8786) or "
                                                             "'local'; default: this machine's process pool")


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
    executor: ExecutorSection = ExecutorSection()


@dataclass(frozen=True)
class HardwareSpec:
    """The scenario's ``hardware`` section as plain data (hwcost builds the model from it)."""

    preset: str | None
    """A hwcost memory preset name (lpddr5x, hbm3e...), or None when ``file`` is given."""
    file: str | None
    """A hwcost hardware YAML as the scenario writes it (resolve with :meth:`Scenario.input_path`)."""
    fields: Mapping[str, Any] = field(default_factory=dict)
    """hwcost hardware fields overriding the preset or file, e.g. ``{"batch": 8}``."""
    lut_sram_bits_per_layer: int | None = None
    """LUT SRAM per layer [bit]; a candidate whose LUT needs more is excluded (dse.fit)."""

    @property
    def label(self) -> str:
        return self.preset or self.file or ""


@dataclass(frozen=True)
class Scenario:
    """A validated scenario, as the explore pipeline uses it."""

    path: Path
    """The scenario file (``<dict>`` for a mapping); relative inputs are looked up beside it."""
    description: str
    weights: tuple[str, ...]
    optional_weights: tuple[str, ...]
    activations: str | None
    act_power: int
    include: str | None
    exclude: str | None
    sample_fraction: float | None
    sensitivity: str | None
    candidates: tuple[Candidate, ...]
    hardware: HardwareSpec
    metric: str
    output_errors: str
    budgets_bpw: tuple[float, ...]
    budget_basis: str
    energy_j_per_token_max: float | None
    decode_area_mm2_max: float | None
    groups: tuple[tuple[str, ...], ...]
    output_dir: Path
    plot: bool
    validate: bool
    cache_dir: Path
    solver_backend: str
    solver_time_limit_s: float
    solver_gap_rel: float
    scheduler: str | None = None
    """Where measurement runs: None (local processes), 'local' (a Dask LocalCluster) or a Dask
    scheduler address (``executor.scheduler``; ``--scheduler`` overrides it)."""

    def input_path(self, spec: str) -> str:
        """An input as the library opens it: see :func:`resolve_input`."""
        return resolve_input(self.path.parent, spec)


def resolve_input(base: Path, spec: str) -> str:
    """The one path rule for inputs: a relative path names a file beside the scenario (``base``)
    when one exists there; otherwise the spec stays as written (a name such as ``minilm`` or
    ``llama-3.1-8b:synthetic``, or a path relative to the working directory)."""
    beside = base / spec
    return str(beside) if not Path(spec).is_absolute() and beside.exists() else spec


def _output_path(base: Path, spec: str) -> Path:
    """Outputs (``output.dir``, ``output.cache_dir``) go beside the scenario unless absolute."""
    return Path(spec) if Path(spec).is_absolute() else base / spec


_SECTIONS = {name: TypeAdapter(f.annotation) for name, f in _ScenarioModel.model_fields.items()}


def parse(raw: Any, origin: str | Path, *, out: str | None = None) -> tuple[Scenario, list[str], frozenset[str]]:
    """Every rule that needs only the mapping; never raises for a user mistake.

    Args:
        raw: the parsed YAML (or a notebook's dict).
        origin: the scenario file, or a label such as ``<dict>``; relative paths resolve beside it.
        out: ``--out``, overriding ``output.dir`` (relative to the working directory).
    Returns:
        (scenario, problems, broken): the scenario built from every valid part (defaults stand in
        for broken sections), the problems as ``field: problem (fix)`` lines, and the names of the
        sections too broken for the cross-field rules to use.
    """
    path = Path(origin)
    if not isinstance(raw, dict):
        raw = {}
        problems = ["expected a mapping with model, candidates, hardware, budgets"]
    else:
        problems = []
    broken: set[str] = set()
    values: dict[str, Any] = {}
    for key, adapter in _SECTIONS.items():
        spec = _ScenarioModel.model_fields[key]
        if key not in raw:
            if spec.is_required():
                problems.append(f"{key}: required field missing")
                broken.add(key)
            values[key] = None if spec.is_required() else spec.get_default(call_default_factory=True)
            continue
        try:
            values[key] = adapter.validate_python(raw[key])
        except ValidationError as err:
            problems += [f"{_loc((key, *e['loc']))}: {_message(e)}" for e in err.errors()]
            broken.add(key)
            values[key] = None if spec.is_required() else spec.get_default(call_default_factory=True)
    problems += [f"{key}: {_message({'type': 'extra_forbidden'})}" for key in raw if key not in _SECTIONS]
    model: ModelSection | None = values["model"]
    candidates_section: CandidatesSection | None = values["candidates"]
    hw: HardwareSection | None = values["hardware"]
    budgets: BudgetsSection | None = values["budgets"]
    candidates = _candidates(candidates_section, problems) if candidates_section is not None else []
    patterns = {}
    for name in ("include", "exclude"):
        pattern = getattr(model, name) if model is not None else None
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as err:
                problems.append(f"model.{name}: invalid regex ({err})")
                pattern = None
                broken.add("model")
        patterns[name] = pattern
    if hw is not None and (hw.preset is None) == (hw.file is None):
        problems.append("hardware: give exactly one of preset (e.g. lpddr5x) or file (a hardware YAML)")
        broken.add("hardware")
    objective: ObjectiveSection = values["objective"]
    if model is not None and objective.metric == "act_sse" and model.activations is None:
        problems.append("objective.metric: act_sse needs model.activations (per-channel statistics); "
                        "add them or use metric sse")
    if model is not None and model.sensitivity is not None and objective.metric != "output":
        problems.append("model.sensitivity: gains are used only by objective.metric: output; "
                        "set the metric or drop the field")
    problems += _group_problems(values["groups"])
    output: OutputSection = values["output"]
    solver: SolverSection = values["solver"]
    out_dir = Path(out) if out else _output_path(path.parent, output.dir)
    weights = () if model is None else (model.weights,) if isinstance(model.weights, str) else tuple(model.weights)
    bpw = [] if budgets is None else budgets.bpw if budgets.bpw is not None else _range(budgets.bpw_range)
    scenario = Scenario(
        path=path, description=values["description"], weights=weights,
        optional_weights=tuple(model.optional_weights) if model else (),
        activations=model.activations if model else None, act_power=model.act_power if model else 2,
        include=patterns["include"], exclude=patterns["exclude"],
        sample_fraction=model.sample_fraction if model else None,
        sensitivity=model.sensitivity if model else None,
        candidates=tuple(candidates),
        hardware=HardwareSpec(hw.preset, hw.file, dict(hw.fields), hw.lut_sram_bits_per_layer) if hw
        else HardwareSpec(None, None),
        metric=objective.metric, output_errors=objective.output_errors, budgets_bpw=tuple(sorted(set(bpw))),
        budget_basis=budgets.basis if budgets else "stored",
        energy_j_per_token_max=budgets.energy_j_per_token_max if budgets else None,
        decode_area_mm2_max=budgets.decode_area_mm2_max if budgets else None,
        groups=tuple(tuple(g) for g in values["groups"]), output_dir=out_dir, plot=output.plot,
        validate=output.validation if output.validation is not None else objective.metric == "output",
        cache_dir=_output_path(path.parent, output.cache_dir) if output.cache_dir else out_dir.parent / ".dse-cache",
        solver_backend=solver.backend, solver_time_limit_s=solver.time_limit_s, solver_gap_rel=solver.gap_rel,
        scheduler=values["executor"].scheduler,
    )
    return scenario, problems, frozenset(broken)


def scenario_from_dict(mapping: Mapping[str, Any], origin: str | Path = "<dict>", *,
                       out: str | None = None) -> Scenario:
    """A scenario from a mapping, validated exactly like a file (relative paths beside ``origin``).

    Raises:
        ScenarioError: every problem, one line each.
    """
    scenario, problems, _ = parse(dict(mapping), origin, out=out)
    if problems:
        raise ScenarioError("\n".join(f"{origin}: {p}" for p in problems))
    return scenario


def read_yaml(path: str | Path) -> Any:
    """The parsed scenario file; an unreadable file (missing, a directory, not UTF-8, bad YAML, a
    key given twice, nested too deeply, an alias bomb) raises a one-line ScenarioError."""
    try:
        return read_document(Path(path), "scenario file", "pass a scenario YAML, e.g. scenarios/edge.yaml")
    except DseError as err:
        raise ScenarioError(str(err)) from None


def load_scenario(path: str | Path, *, out: str | None = None) -> Scenario:
    """Read and validate a scenario file; every problem is reported in one ScenarioError."""
    return scenario_from_dict(read_yaml(path), Path(path), out=out)


@dataclass(frozen=True)
class TensorFacts:
    """What the cross-field rules need to know about one selected tensor."""

    name: str
    role: str
    in_features: int
    has_statistics: bool


def cross_problems(s: Scenario, tensors: Sequence[TensorFacts] | None,
                   lut_bits: Mapping[str, int] | None) -> list[str]:
    """The rules that need the model and the hardware, every problem at once.

    Args:
        tensors: the selected tensors, or None when the sources could not be listed.
        lut_bits: LUT bits per layer each candidate needs with the hardware's LUT word (by name), or
            None without hardware.
    """
    problems = []
    cap = s.hardware.lut_sram_bits_per_layer
    if lut_bits is not None and cap is not None and s.candidates and min(lut_bits.values()) > cap:
        # a candidate that does not fit is excluded (dse.fit); only "none fits" is a problem
        problems.append(f"hardware.lut_sram_bits_per_layer: {cap} bits hold no candidate's LUT (the smallest "
                        f"needs {min(lut_bits.values())}); raise it or add a directly decoded format such as E2M1sE4M3")
    if tensors is None:
        return problems
    if not tensors:
        return problems + ["model: no tensors selected (check model.weights, include, exclude)"]
    for c in s.candidates:
        if c.block_size is not None and not any(t.in_features % c.block_size == 0 for t in tensors):
            problems.append(f"candidates: {c.name}: block {c.block_size} divides no tensor's row length")
    if s.metric == "act_sse" and s.activations is not None:
        lacking = [t.name for t in tensors if not t.has_statistics]
        if lacking:
            shown = ", ".join(lacking[:4]) + (f" and {len(lacking) - 4} more" if len(lacking) > 4 else "")
            problems.append(f"objective.metric: act_sse needs statistics for every tensor, but {s.activations} has "
                            f"none for {len(lacking)} of {len(tensors)} ({shown}: absent from the file, or MoE "
                            "experts no token reached); drop them with model.exclude, regenerate the statistics on "
                            "text that reaches them, or use metric sse")
    roles = sorted({t.role for t in tensors})
    for i, group in enumerate(s.groups):
        absent = [r for r in group if r not in roles]
        if absent:
            problems.append(f"groups[{i}]: role {absent[0]!r} is not the role of any selected tensor "
                            f"(roles present: {', '.join(roles)})")
    return problems


def _group_problems(groups: list[list[str]]) -> list[str]:
    """A group shares one format among two or more roles; a role joins one group (else the last
    group naming it would silently win)."""
    problems = []
    owner: dict[str, int] = {}
    for i, group in enumerate(groups):
        if len(set(group)) < 2:
            problems.append(f"groups[{i}]: a group shares one format among two or more roles, e.g. [q, k, v]")
        for role in dict.fromkeys(group):
            if owner.setdefault(role, i) != i:
                problems.append(f"groups[{i}]: role {brief(role)} is already in groups[{owner[role]}]; "
                                "a role joins one group")
    return problems


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


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see README 'Scenario fields')"
    if kind == "missing":
        return "required field missing"
    return str(error["msg"]).replace("Value error, ", "")
