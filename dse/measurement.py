"""Measurement: the error of candidates on tensors, for ``dse measure`` and for ``dse explore``.

* :func:`measure_tensor` is the one per-tensor measure (exact, or estimated from a sample of rows);
* :func:`stats_record` is the one ErrorStats -> record function (column names carry units);
* :func:`measure_source` streams a source for ``dse measure``;
* :func:`measure_table` is explore's (tensor x candidate) table, parallel over tensors and cached.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dse.cache import MeasurementCache, content_hash
from dse.scenario import Scenario
from dse.setup import Setup, Tensor
from models.activations import load_activations
from models.sampling import SampledStats, sample_tensor
from models.source import TensorInfo, WeightSource
from models.sources import open_source
from quant import Candidate, ErrorStats, measure, parse_candidate
from quant.metrics import activation_weights

TOTAL = "*"
"""Tensor name of the element-weighted total row of a candidate."""

STAT_COLUMNS = {
    "sse": "sum_d2", "mse": "mse", "rel_mse": "rel_mse", "sqnr_db": "sqnr_db", "cosine": "cosine",
    "cos_deficit_ppm": "cos_deficit_ppm", "act_sse": "hsum_d2", "act_mse": "act_mse", "act_rel_mse": "act_rel_mse",
    "acos_deficit_ppm": "acos_deficit_ppm", "second_grid_fraction": "second_grid_fraction",
    "sparse_entries": "sparse",
}
"""Record column -> :class:`quant.ErrorStats` attribute. ``sse`` and ``act_sse`` are sums of
(weighted) squared errors over the tensor; ``*_db`` in decibels, ``*_ppm`` in parts per million."""


def stats_record(stats: ErrorStats, columns: Sequence[str]) -> dict[str, Any]:
    """The named columns (keys of :data:`STAT_COLUMNS`) of one measurement."""
    return {column: getattr(stats, STAT_COLUMNS[column]) for column in columns}


def measure_tensor(source: WeightSource, info: TensorInfo, candidates: Sequence[Candidate], *,
                   act: np.ndarray | None = None, sample_fraction: float | None = None, threads: int | None = None,
                   weights: np.ndarray | None = None) -> list[tuple[ErrorStats, SampledStats | None]]:
    """Each candidate's error on one tensor: (stats, None) when exact, (estimate, replicates) when sampled.

    Args:
        act: (in_features,) activation weights h, or None.
        sample_fraction: None measures every row; a fraction in (0, 1] estimates from a seeded
            sample of row groups (:func:`models.sampling.sample_tensor`).
        weights: the tensor when the caller has loaded it already (exact mode).
    """
    if sample_fraction is not None:
        return [(e.estimate, e) for e in sample_tensor(source, info, candidates, sample_fraction, act=act,
                                                       threads=threads)]
    w = source.load(info.name) if weights is None else weights
    return [(measure(w, c, act=act, name=info.name, threads=threads), None) for c in candidates]


@dataclass(frozen=True)
class Measurement:
    """Error and exact size of one candidate on one tensor (or on all of them: tensor '*')."""

    candidate: str
    tensor: str
    numel: int
    total_bits: float
    stats: ErrorStats
    prequantized: bool = False
    sample: SampledStats | None = None
    """Replicate estimates when ``stats`` was estimated from a sample of rows (None: exact)."""

    @property
    def bpw(self) -> float:
        return self.total_bits / self.numel

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"candidate": self.candidate, "tensor": self.tensor, "numel": self.numel,
                               "bpw": self.bpw}
        out |= stats_record(self.stats, ("mse", "rel_mse", "sqnr_db", "cosine", "cos_deficit_ppm",
                                         "second_grid_fraction", "sparse_entries"))
        out["prequantized"] = self.prequantized
        if self.stats.weighted:
            out |= stats_record(self.stats, ("act_mse", "act_rel_mse", "acos_deficit_ppm"))
        if self.sample is not None:
            out.update(rel_mse_ci95=list(self.sample.rel_mse_ci95))
        return out


def activation_source(spec: str, power: int = 2) -> Callable[[TensorInfo], np.ndarray | None]:
    """Per-tensor activation weights h (None for a tensor without statistics) from a statistics
    source: ``minilm``, an imatrix ``.gguf``/``.dat``, or a ``.safetensors``/``.npz`` of vectors."""
    stats = load_activations(spec)

    def for_tensor(info: TensorInfo) -> np.ndarray | None:
        vector = stats.for_tensor(info.name, info.shape[1])
        return None if vector is None else activation_weights(vector, power)

    return for_tensor


def measure_source(
    source: WeightSource,
    candidates: Sequence[Candidate],
    *,
    threads: int | None = None,
    on_tensor: Callable[[TensorInfo], None] | None = None,
    sample_fraction: float | None = None,
    act: Callable[[TensorInfo], np.ndarray | None] | None = None,
) -> list[Measurement]:
    """Every (tensor, candidate) measurement, tensors streamed one at a time, then a total per candidate.

    With ``sample_fraction`` the errors are estimated from a seeded sample of row groups, with
    95 % confidence intervals (models/sampling.py). ``act`` gives a tensor's per-input-channel
    activation weights (or None): weighted metrics are then reported, and ``:aw`` candidates use them.
    """
    rows: list[Measurement] = []
    for info in source.infos():
        h = act(info) if act is not None else None
        measured = measure_tensor(source, info, candidates, act=h, sample_fraction=sample_fraction, threads=threads)
        for c, (stats, sample) in zip(candidates, measured, strict=True):
            # a sampled estimate's stored-aside count is itself estimated: size it by the candidate alone
            bits = c.bits(info.numel) if sample is not None else c.bits(info.numel, stats.sparse)
            rows.append(Measurement(c.name, info.name, info.numel, bits.total_bits, stats, info.prequantized, sample))
        if on_tensor is not None:
            on_tensor(info)
    return rows + totals(rows)


def totals(rows: Sequence[Measurement]) -> list[Measurement]:
    """One element-weighted total row per candidate (sums of errors and bits over tensors)."""
    merged: dict[str, Measurement] = {}
    for m in rows:
        if m.tensor == TOTAL:
            continue
        prev = merged.get(m.candidate)
        merged[m.candidate] = m if prev is None else Measurement(
            m.candidate, TOTAL, prev.numel + m.numel, prev.total_bits + m.total_bits,
            prev.stats + m.stats, prev.prequantized or m.prequantized,
            prev.sample + m.sample if prev.sample is not None and m.sample is not None else None,
        )
    return [Measurement(m.candidate, TOTAL, m.numel, m.total_bits, m.stats, m.prequantized, m.sample)
            for m in merged.values()]


def measure_table(s: Scenario, built: Setup, *, jobs: int | None = None,
                  on_tensor: Callable[[Tensor], None] | None = None) -> pd.DataFrame:
    """The (tensor x candidate) table of a scenario, measured in parallel over tensors and cached.

    One row per tensor and applicable candidate: ``bpw`` [bit/weight], ``total_bits`` [bit],
    ``error`` (the scenario's metric), the :func:`stats_record` columns, and the tensor's role,
    layer, element count and pre-quantized flag.
    """
    names = [c.name for c in s.candidates]
    jobs = jobs or os.cpu_count() or 1
    results: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    args = [(s.input_path(t.source), t.source_name, names, built.acts.get(t.name), str(s.cache_dir),
             s.sample_fraction) for t in built.tensors]
    if jobs == 1:
        for t, a in zip(built.tensors, args):
            results[t.name] = _measure_cached(*a)
            if on_tensor:
                on_tensor(t)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_measure_cached, *a): t for t, a in zip(built.tensors, args)}
            for future in as_completed(futures):
                t = futures[future]
                results[t.name] = future.result()
                if on_tensor:
                    on_tensor(t)
    rows = []
    by_name = {c.name: c for c in s.candidates}
    for t in built.tensors:  # fixed order: the table does not depend on completion order
        for name, stats_dict in results[t.name]:
            stats = ErrorStats(**stats_dict)
            bits = by_name[name].bits(t.numel, stats.sparse)
            rows.append({
                "tensor": t.name, "candidate": name, "role": t.role, "layer": t.layer, "numel": t.numel,
                "bpw": bits.bpw, "total_bits": bits.total_bits, "error": metric_error(stats, s.metric),
                **stats_record(stats, ("sse", "rel_mse", "sqnr_db", "cos_deficit_ppm", "act_sse", "acos_deficit_ppm",
                                       "second_grid_fraction", "sparse_entries")),
                "prequantized": t.prequantized,
            })
    return pd.DataFrame(rows)


def metric_error(stats: ErrorStats, metric: str) -> float:
    """The optimizer's per-tensor error under ``metric`` (sse, act_sse or rel_mse)."""
    if metric == "act_sse":
        return stats.hsum_d2
    if metric == "rel_mse":
        return stats.numel * stats.rel_mse
    return stats.sum_d2


def _measure_cached(spec: str, source_name: str, candidates: Sequence[str], act: np.ndarray | None,
                    cache_root: str, sample_fraction: float | None) -> list[tuple[str, dict[str, Any]]]:
    """Worker: measure every candidate of one tensor that is not cached yet. Runs in a process.

    Exact mode keys the cache by the tensor's content hash. Sampled mode (very large models)
    never loads the whole tensor, so it keys by source, name, shape and fraction instead.
    """
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
    wanted = [n for n in candidates if applies(parse_candidate(n), info)]
    found = {n: cache.get(cache.key(tensor_hash, n, act_hash)) for n in wanted}
    missing = [n for n in wanted if found[n] is None]
    if missing:
        fresh = measure_tensor(source, info, [parse_candidate(n) for n in missing], act=act,
                               sample_fraction=sample_fraction, threads=1, weights=w)
        for n, (stats, _) in zip(missing, fresh, strict=True):
            cache.put(cache.key(tensor_hash, n, act_hash), stats)
            found[n] = stats
    return [(n, found[n].__dict__) for n in wanted]


@functools.lru_cache(maxsize=4)
def _open_cached(spec: str) -> WeightSource:
    """A worker process measures many tensors of one source: open it (parse its header) once."""
    return open_source(spec)


def applies(c: Candidate, info: TensorInfo) -> bool:
    """A candidate whose block does not divide the rows is not offered for this tensor."""
    return c.block_size is None or info.shape[1] % c.block_size == 0
