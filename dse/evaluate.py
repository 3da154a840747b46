"""End-to-end output error of quantized assignments: quantize every tensor, dequantize, run the model.

Library API (``dse evaluate`` and the validation step of ``dse explore`` are thin layers over it)::

    from dse.evaluate import evaluate_assignments
    [result] = evaluate_assignments("minilm", [{"encoder.layer.0.output.dense.weight": "E2M1sE4M3", ...}])
    result.output_error, result.bpw

Only the weight matrices named in an assignment are quantized; the others (and all vectors:
norms, biases) keep their reference values. Results are cached by (model, text, assignment),
written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dse.atomic import write_atomic
from dse.cache import MeasurementCache, content_hash
from dse.sensitivity import model_fingerprint
from quant.errors import DseError

EVALUATION_VERSION = "sop-dse-evaluate-1"  # bump when forward passes or quantizers change numbers
_RECONSTRUCTION_BUDGET_BYTES = 1 << 31
"""Dequantized tensors kept per worker for reuse across assignments (front points share many)."""


@dataclass(frozen=True)
class Evaluation:
    """Measured output of one quantized assignment on a text set."""

    output_error: float
    """Encoder: mean 1 - cos of sentence embeddings; decoder: mean KL(ref || quantized), nats/token."""
    metric: str
    bpw: float
    """Bits per weight over the assigned tensors (sparse entries included)."""
    perplexity: float | None = None
    """Decoder only: perplexity of the quantized model on the text."""
    reference_perplexity: float | None = None
    """Decoder only: perplexity of the unquantized (reference) model on the text."""


@dataclass
class _Worker:
    """What one worker process holds: the model, its held-out reference, reusable reconstructions."""

    model: Any
    prepared: Any
    cache: MeasurementCache | None
    """Where the measurement left the learned grids it fitted to each tensor (None: fit them here)."""
    recon: dict[tuple[str, str], tuple[np.ndarray, float]] = field(default_factory=dict)
    recon_bytes: int = 0


_STATE: list[_Worker] = []  # the worker's state (one entry once initialized)


def _init_worker(spec: str, texts: tuple[str, ...], cache_root: Path | None) -> None:
    from models.forward import open_output_model

    model = open_output_model(spec)
    cache = None if cache_root is None else MeasurementCache(cache_root)
    _STATE[:] = [_Worker(model, model.prepare(texts, "held_out"), cache)]


def _reconstruct(worker: _Worker, tensor: str, candidate: str) -> tuple[np.ndarray, float]:
    """Dequantized ``tensor`` under ``candidate`` and its exact storage bits (kept for reuse)."""
    from quant import dequantize, parse_candidate, quantize

    hit = worker.recon.get((tensor, candidate))
    if hit is not None:
        return hit
    c = parse_candidate(candidate)
    w = worker.model.reference_weight(tensor)
    grids = None
    if worker.cache is not None and c.learned and not c.act_weighted:  # the grids measure_table fitted, if any
        grids = worker.cache.get_grids(worker.cache.grids_key(content_hash(w), candidate), len(c.atoms))
    q = quantize(w, c, name=tensor, threads=1, grids=grids)
    out = (dequantize(q), c.bits(w.size, int(q.sparse_index.size)).total_bits)
    if worker.recon_bytes + out[0].nbytes <= _RECONSTRUCTION_BUDGET_BYTES:
        worker.recon[(tensor, candidate)] = out
        worker.recon_bytes += out[0].nbytes
    return out


def _evaluate_one(assignment: dict[str, str]) -> Evaluation:
    worker = _STATE[0]
    model, prepared = worker.model, worker.prepared
    overrides, bits, numel = {}, 0.0, 0
    for tensor, candidate in assignment.items():
        w_hat, b = _reconstruct(worker, tensor, candidate)
        overrides[tensor] = w_hat
        bits += b
        numel += w_hat.size
    if model.kind == "decoder":
        error, perplexity = model.error_and_perplexity(prepared, overrides)
        return Evaluation(error, model.metric, bits / numel, perplexity, model.perplexity(prepared))
    return Evaluation(model.error(prepared, overrides), model.metric, bits / numel)


def _key(prefix: str, assignment: Mapping[str, str]) -> str:
    return hashlib.blake2b(f"{prefix}|{sorted(assignment.items())!r}".encode(), digest_size=16).hexdigest()


def evaluate_assignments(spec: str, assignments: Sequence[Mapping[str, str]], texts: Sequence[str] | None = None, *,
                         cache_root: Path | None = None, jobs: int | None = None,
                         on_done: Callable[[int, int], None] | None = None) -> list[Evaluation]:
    """Measured output error of each assignment (tensor name in ``spec`` -> candidate name).

    Args:
        spec: weight source with a forward pass (:func:`models.forward.open_output_model`).
        assignments: tensor -> candidate name, one mapping per point.
        texts: the text set (default: the built-in held-out sentences).
        cache_root: cache directory (entries in ``<cache_root>/evaluations``; the learned grids
            a measurement fitted to a whole tensor are read from there too, not fitted again);
            None: no cache.
        jobs: worker processes (default: all cores, at most one per uncached assignment).
        on_done: progress callback ``(done, total)``.
    """
    from models.texts import HELD_OUT

    texts = tuple(texts or HELD_OUT)
    prefix = f"{EVALUATION_VERSION}|{model_fingerprint(spec)}|{hashlib.blake2b(chr(10).join(texts).encode()).hexdigest()}"
    results: list[Evaluation | None] = [None] * len(assignments)
    paths = [None if cache_root is None else cache_root / "evaluations" / f"{_key(prefix, a)}.json"
             for a in assignments]
    for i, path in enumerate(paths):
        if path is not None and path.exists():
            try:
                results[i] = Evaluation(**json.loads(path.read_text()))
            except (json.JSONDecodeError, TypeError):
                results[i] = None  # unreadable entry: evaluated again
    todo = [i for i, r in enumerate(results) if r is None]
    done = len(assignments) - len(todo)
    if on_done:
        on_done(done, len(assignments))

    def store(i: int, evaluation: Evaluation) -> None:
        nonlocal done
        results[i] = evaluation
        if paths[i] is not None:
            write_atomic(paths[i], json.dumps(asdict(evaluation)))  # type: ignore[arg-type]
        done += 1
        if on_done:
            on_done(done, len(assignments))

    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    if todo and jobs == 1:
        _init_worker(spec, texts, cache_root)
        for i in todo:
            store(i, _evaluate_one(dict(assignments[i])))
        _STATE.clear()
    elif todo:
        # contiguous slices per worker: neighbouring front points share most reconstructions
        with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(spec, texts, cache_root)) as pool:
            for i, evaluation in zip(todo, pool.map(_evaluate_one, [dict(assignments[i]) for i in todo],
                                                    chunksize=max(1, len(todo) // jobs))):
                store(i, evaluation)
    return [r for r in results if r is not None]


def uniform_assignment(spec: str, candidate: str) -> dict[str, str]:
    """``candidate`` on every weight matrix of the source; an error names a tensor it cannot take."""
    from models.sources import open_source
    from quant import parse_candidate

    c = parse_candidate(candidate)
    out = {}
    for info in open_source(spec).infos():
        if c.block_size is not None and info.shape[1] % c.block_size:
            raise DseError(f"{c.name}: block {c.block_size} does not divide the {info.shape[1]} columns of "
                           f"{info.name!r}; pick a block size that divides every row")
        out[info.name] = c.name
    return out
