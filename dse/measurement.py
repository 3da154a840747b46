"""Measurement: the error of candidates on tensors, for ``dse measure`` and for ``dse explore``.

* :func:`measure_tensor` is the one per-tensor measure (exact, or estimated from a sample of rows);
* :func:`stats_record` is the one ErrorStats -> record function (column names carry units);
* :func:`measure_source` streams a source for ``dse measure``;
* :func:`measure_table` is explore's (tensor x candidate) table, parallel over tensors and cached.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dse.atomic import remove_dead_temps
from dse.cache import MeasurementCache, content_hash
from dse.executor import Executor
from dse.scenario import Scenario
from dse.setup import Setup, Tensor
from models.activations import load_activations
from models.sampling import SampledStats, sample_tensor
from models.source import TensorInfo, WeightSource
from models.sources import open_source
from quant import Candidate, ErrorStats, fit_grids, measure, parse_candidate
from quant.errors import DseError
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
                   weights: np.ndarray | None = None,
                   fitted: dict[str, tuple[np.ndarray, ...]] | None = None) -> list[tuple[ErrorStats, SampledStats | None]]:
    """Each candidate's error on one tensor: (stats, None) when exact, (estimate, replicates) when sampled.

    Args:
        act: (in_features,) activation weights h, or None.
        sample_fraction: None measures every row; a fraction in (0, 1] estimates from a seeded
            sample of row groups (:func:`models.sampling.sample_tensor`).
        weights: the tensor when the caller has loaded it already (exact mode).
        fitted: exact mode: filled with the learned grids fitted to the whole tensor, by candidate
            name (those that ignore the activations: ``quantize()`` without them fits the same).
    """
    if sample_fraction is not None:
        return [(e.estimate, e) for e in sample_tensor(source, info, candidates, sample_fraction, act=act,
                                                       threads=threads)]
    w = source.load(info.name) if weights is None else weights
    out: list[tuple[ErrorStats, SampledStats | None]] = []
    for c in candidates:
        grids = None
        if fitted is not None and c.learned and not c.act_weighted:
            grids = fitted[c.name] = fit_grids(w, c, act=act, name=info.name, threads=threads)
        out.append((measure(w, c, act=act, name=info.name, threads=threads, grids=grids), None))
    return out


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
        try:
            return None if vector is None else activation_weights(vector, power)
        except DseError as err:
            raise DseError(f"{spec}: tensor {info.name}: {err}") from None

    return for_tensor


def measure_source(
    source: WeightSource,
    candidates: Sequence[Candidate],
    *,
    threads: int | None = None,
    on_tensor: Callable[[TensorInfo], None] | None = None,
    sample_fraction: float | None = None,
    act: Callable[[TensorInfo], np.ndarray | None] | None = None,
    executor: Executor | None = None,
    spec: str | None = None,
    open_args: tuple[tuple[int, int], int] = ((4096, 4096), 0),
    include: str | None = None,
) -> list[Measurement]:
    """Every (tensor, candidate) measurement, tensors streamed one at a time, then a total per candidate.

    With ``sample_fraction`` the errors are estimated from a seeded sample of row groups, with
    95 % confidence intervals (models/sampling.py). ``act`` gives a tensor's per-input-channel
    activation weights (or None): weighted metrics are then reported, and ``:aw`` candidates use them.
    With ``executor`` (and ``spec`` and ``open_args`` = (shape, seed), the source as
    :func:`models.sources.open_source` opens it) the tensors are measured as parallel jobs, each
    opening the source itself.
    ``include``: a regex; only tensors whose name it matches (``re.search``) are measured.
    """
    infos = selected(source.infos(), include)
    acts = [act(info) if act is not None else None for info in infos]
    measured: dict[int, list[tuple[ErrorStats, SampledStats | None]]] = {}
    if executor is None:
        results = ((i, measure_tensor(source, info, candidates, act=h, sample_fraction=sample_fraction,
                                      threads=threads)) for i, (info, h) in enumerate(zip(infos, acts)))
    else:
        if spec is None:
            raise ValueError("measure_source: an executor needs the source's spec")
        names = [c.name for c in candidates]
        results = executor.map_unordered(_measure_named, [(spec, open_args, info.name, names, h, sample_fraction)
                                                          for info, h in zip(infos, acts)])
    for i, result in results:
        measured[i] = result
        if on_tensor is not None:
            on_tensor(infos[i])
    rows: list[Measurement] = []
    for i, info in enumerate(infos):  # source order, whatever the completion order
        for c, (stats, sample) in zip(candidates, measured[i], strict=True):
            # a sampled estimate's stored-aside count is itself estimated: size it by the candidate alone
            bits = c.bits(info.numel) if sample is not None else c.bits(info.numel, stats.sparse)
            rows.append(Measurement(c.name, info.name, info.numel, bits.total_bits, stats, info.prequantized, sample))
    return rows + totals(rows)


def _measure_named(spec: str, open_args: tuple[tuple[int, int], int], name: str, candidates: Sequence[str],
                   act: np.ndarray | None, sample_fraction: float | None) -> list[tuple[ErrorStats, SampledStats | None]]:
    """Job: :func:`measure_tensor` on tensor ``name`` of source ``spec``, opened in the worker."""
    source = open_source_cached(spec, *open_args)
    info = next(i for i in source.infos() if i.name == name)
    return measure_tensor(source, info, [parse_candidate(n) for n in candidates], act=act,
                          sample_fraction=sample_fraction, threads=1)


def selected(infos: Sequence[TensorInfo], include: str | None) -> list[TensorInfo]:
    """The tensors whose name ``include`` matches (all when None); DseError for a bad regex."""
    if include is None:
        return list(infos)
    try:
        pattern = re.compile(include)
    except re.error as err:
        raise DseError(f"--include {include!r}: not a regular expression ({err}); e.g. 'layer\\.0\\.'") from None
    return [i for i in infos if pattern.search(i.name)]


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


def measure_table(s: Scenario, built: Setup, executor: Executor,
                  on_tensor: Callable[[Tensor], None] | None = None,
                  while_measuring: Callable[[], None] | None = None) -> pd.DataFrame:
    """The (tensor x candidate) table of a scenario, measured by ``executor`` and cached.

    One row per tensor and applicable candidate: ``bpw`` [bit/weight], ``total_bits`` [bit],
    ``error`` (the scenario's metric), the :func:`stats_record` columns, and the tensor's role,
    layer, element count and pre-quantized flag. Only this process reads and writes the cache,
    one entry per (tensor, candidate) as each tensor's result arrives, so an interrupted run keeps
    every finished tensor. A tensor is one job for all its candidates still needed (read, or its
    sample drawn, once); a warm tensor is no job at all.

    ``while_measuring`` runs on a background thread of this process from the first finished job
    (the executor's workers exist by then: no process is forked while it runs) and is joined
    before returning; a run with no job never calls it. Its exceptions are dropped: it may only
    prepare what later steps would otherwise do themselves (they then report any failure).
    """
    by_name = {c.name: c for c in s.candidates}
    remove_dead_temps(s.cache_dir)  # a killed run's half-written entries
    cache = MeasurementCache(s.cache_dir)
    found: dict[str, dict[str, ErrorStats]] = {}
    jobs: list[tuple[Any, ...]] = []
    job_tensor: list[tuple[Tensor, str, str | None, str]] = []
    # Largest tensors first: the shortest schedule on any number of workers, near enough (LPT).
    for t in sorted(built.tensors, key=lambda t: -t.numel):
        spec = s.input_path(t.source)
        wanted = [n for n, c in by_name.items() if applies(c, t.shape)]
        act = built.acts.get(t.name)
        act_hash = content_hash(act)
        # Sampled mode keys by fingerprint (it never loads the whole tensor); exact mode by content,
        # whose hash only a worker can compute: the hash cached under the same fingerprint is
        # trusted, any other is a guess the worker checks (a job with no candidate only checks).
        known = sample_key(t.fingerprint, t.shape, s.sample_fraction) if s.sample_fraction else None
        last = cache.last_hash(spec, t.source_name)
        guess = known or (last[0] if last else None)
        trusted = known is not None or (last is not None and last[1] == t.fingerprint)
        hits = {n: e for n in wanted if guess and (e := cache.get(cache.key(guess, n, act_hash))) is not None}
        found[t.name] = hits
        missing = [n for n in wanted if n not in hits]
        if missing or not trusted:
            jobs.append((spec, t.source_name, wanted, act, s.sample_fraction, guess, sorted(hits)))
            job_tensor.append((t, spec, guess, act_hash))
        elif on_tensor:
            on_tensor(t)
    background: threading.Thread | None = None
    for i, (tensor_hash, fresh, fitted) in executor.map_unordered(measure_job, jobs):
        if background is None and while_measuring is not None:
            background = threading.Thread(target=_ignoring_errors, args=(while_measuring,), daemon=True)
            background.start()
        t, spec, guess, act_hash = job_tensor[i]
        if tensor_hash != guess:  # the weights changed: no guessed entry applies (all were measured)
            found[t.name] = {}
        for name, stats_dict in fresh:
            stats = ErrorStats(**stats_dict)
            cache.put(cache.key(tensor_hash, name, act_hash), stats)
            found[t.name][name] = stats
        for name, grids in fitted.items():
            cache.put_grids(cache.grids_key(tensor_hash, name), grids)
        cache.set_last_hash(spec, t.source_name, tensor_hash, t.fingerprint)
        if on_tensor:
            on_tensor(t)
    if background is not None:
        background.join()
    rows = []
    for t in built.tensors:  # fixed order: the table does not depend on completion order
        for name, c in by_name.items():
            if name not in found[t.name]:
                continue
            stats = found[t.name][name]
            bits = c.bits(t.numel, stats.sparse)
            rows.append({
                "tensor": t.name, "candidate": name, "role": t.role, "layer": t.layer, "numel": t.numel,
                "bpw": bits.bpw, "total_bits": bits.total_bits, "error": metric_error(stats, s.metric),
                **stats_record(stats, ("sse", "rel_mse", "sqnr_db", "cos_deficit_ppm", "act_sse", "acos_deficit_ppm",
                                       "second_grid_fraction", "sparse_entries")),
                "prequantized": t.prequantized,
            })
    return pd.DataFrame(rows)


def _ignoring_errors(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 (see measure_table: the step that needs it reports the failure)
        pass


def metric_error(stats: ErrorStats, metric: str) -> float:
    """The optimizer's per-tensor error under ``metric`` (sse, act_sse or rel_mse; ``output`` starts from
    the squared error, which dse.output scales by each tensor's gain)."""
    if metric == "act_sse":
        return stats.hsum_d2
    if metric == "rel_mse":
        return stats.numel * stats.rel_mse
    return stats.sum_d2


def sample_key(fingerprint: str, shape: tuple[int, int], fraction: float) -> str:
    """Cache identity of a sampled tensor: its fingerprint, shape and sample fraction."""
    return content_hash(np.frombuffer(f"{fingerprint}|{shape}|{fraction}".encode(), np.uint8))


def measure_job(spec: str, source_name: str, candidates: Sequence[str], act: np.ndarray | None,
                sample_fraction: float | None, guess: str | None,
                cached: Sequence[str]) -> tuple[str, list[tuple[str, dict[str, Any]]], dict[str, tuple[np.ndarray, ...]]]:
    """One tensor's measurement job (runs in a worker process, local or on a Dask cluster).

    Opens the source itself (:func:`open_source_cached`) and reads the one tensor. ``cached``
    candidates are skipped when the tensor's hash equals ``guess`` (the client holds their
    results); otherwise every candidate is measured. A sampled tensor's hash is the client's ``guess`` (its sample
    key). Returns the tensor's cache hash, the fresh (candidate, ErrorStats fields) pairs and,
    in exact mode, the learned grids fitted to the tensor (:func:`measure_tensor`'s ``fitted``).
    """
    source = open_source_cached(spec)
    info = next(i for i in source.infos() if i.name == source_name)
    w = None
    if sample_fraction is None:
        w = source.load(source_name)
        tensor_hash = content_hash(w)
    else:
        assert guess is not None, "a sampled job carries its sample key"
        tensor_hash = guess
    missing = [n for n in candidates if tensor_hash != guess or n not in cached]
    fitted: dict[str, tuple[np.ndarray, ...]] = {}
    fresh = measure_tensor(source, info, [parse_candidate(n) for n in missing], act=act,
                           sample_fraction=sample_fraction, threads=1, weights=w, fitted=fitted) if missing else []
    return tensor_hash, [(n, stats.__dict__) for n, (stats, _) in zip(missing, fresh, strict=True)], fitted


def open_source_cached(spec: str, shape: tuple[int, int] = (4096, 4096), seed: int = 0) -> WeightSource:
    """A worker process measures many tensors of one source: open it (parse its header) once,
    and again only when a file it read has changed since (a re-stat per call, nothing read), so
    that no job of a long-lived worker reads a stale header against rewritten data."""
    source = _opened(spec, shape, seed)
    if source.changed():
        _opened.cache_clear()
        source = _opened(spec, shape, seed)
    return source


@functools.lru_cache(maxsize=4)
def _opened(spec: str, shape: tuple[int, int], seed: int) -> WeightSource:
    return open_source(spec, shape=shape, seed=seed)


def applies(c: Candidate, shape: tuple[int, int]) -> bool:
    """A candidate whose block does not divide the rows (``shape[1]``) is not offered for a tensor."""
    return c.block_size is None or shape[1] % c.block_size == 0
