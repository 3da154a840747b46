"""Measurement cache: one small JSON file per (tensor content, candidate, activations, code version),
and the learned grids (DD4) fitted to each whole tensor, which the validation's forward passes
reuse instead of fitting them again.

Entries are written atomically (temp file + rename in the same directory), so a run killed at
any point leaves only complete entries, and a restart re-measures only what is missing. Each
entry carries its key and a BLAKE2b over key and value: a damaged, truncated or edited entry is
treated as absent and measured (or solved) again, never trusted.
Changing budgets, hardware or the objective never invalidates an entry: none of them is part
of the key.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dse.atomic import write_atomic

from quant.metrics import STAT_FIELDS, ErrorStats

# Bump when a change to quant/ alters measured numbers: old entries are then ignored.
CACHE_VERSION = "sop-dse-measure-2"
SOLUTION_VERSION = "sop-dse-solution-4"  # bump when the stored sweep format changes


def content_hash(array: np.ndarray | None) -> str:
    """BLAKE2b of an array's dtype, shape and bytes ('' for None)."""
    if array is None:
        return ""
    a = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.view(np.uint8).reshape(-1).data)
    return h.hexdigest()


def _sealed(key: str, body: object) -> str:
    """An entry's JSON: its key and body with a BLAKE2b over both, so that a damaged or edited
    entry (or one copied under another key) is recognised and measured or solved again."""
    text = json.dumps({"key": key, "body": body}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return json.dumps({"key": key, "body": body, "blake2b": _digest(text)}, allow_nan=False)


def _unsealed(path: Path, key: str) -> object | None:
    """The body of the entry at ``path`` if it is intact and belongs to ``key``; None otherwise."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        text = json.dumps({"key": entry["key"], "body": entry["body"]}, sort_keys=True, separators=(",", ":"),
                          allow_nan=False)
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None  # missing, unreadable, not JSON, not an entry: the same as absent
    return entry["body"] if entry["key"] == key and entry.get("blake2b") == _digest(text) else None


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


_STATS_FIELDS = set(STAT_FIELDS)


class MeasurementCache:
    """Measured ErrorStats on disk, keyed by content; one entry per (tensor, candidate)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def key(self, tensor_hash: str, candidate: str, act_hash: str) -> str:
        return hashlib.blake2b(f"{CACHE_VERSION}|{tensor_hash}|{candidate}|{act_hash}".encode(),
                               digest_size=16).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ErrorStats | None:
        """The entry, or None when it is absent or fails its check (then it is measured again)."""
        data = _unsealed(self._path(key), key)
        if not isinstance(data, dict) or set(data) != _STATS_FIELDS:
            return None
        values = {k: (math.nan if v is None else v) for k, v in data.items()}
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values.values()):
            return None
        stats = ErrorStats(**values)
        if not (stats.numel > 0 and all(math.isfinite(getattr(stats, k)) and getattr(stats, k) >= 0
                                        for k in ("sum_w2", "sum_q2", "sum_d2"))):
            return None
        return stats

    def put(self, key: str, stats: ErrorStats) -> None:
        values = ((k, getattr(stats, k)) for k in STAT_FIELDS)  # flat numbers: asdict()'s deep copy costs 4x more
        payload = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values}
        write_atomic(self._path(key), _sealed(key, payload))

    def grids_key(self, tensor_hash: str, candidate: str) -> str:
        return hashlib.blake2b(f"{CACHE_VERSION}|grids|{tensor_hash}|{candidate}".encode(), digest_size=16).hexdigest()

    def put_grids(self, key: str, grids: Sequence[np.ndarray]) -> None:
        """A candidate's grids as fitted to a whole tensor (float32 values, stored exactly)."""
        write_atomic(self.root / "grids" / f"{key}.json", _sealed(key, [np.asarray(g, np.float32).tolist() for g in grids]))

    def get_grids(self, key: str, count: int) -> tuple[np.ndarray, ...] | None:
        """``count`` stored grids of finite values, or None when absent or damaged (then fitted again)."""
        body = _unsealed(self.root / "grids" / f"{key}.json", key)
        if not (isinstance(body, list) and len(body) == count and all(isinstance(g, list) and g for g in body)):
            return None
        try:
            grids = tuple(np.array(g, np.float32) for g in body)
        except (TypeError, ValueError):
            return None
        return grids if all(g.ndim == 1 and np.isfinite(g).all() for g in grids) else None

    @staticmethod
    def _last_key(spec: str, tensor: str) -> str:
        return _digest(f"{CACHE_VERSION}|last|{spec}|{tensor}")

    def _last_path(self, key: str) -> Path:
        return self.root / "tensors" / f"{key}.json"

    def last_hash(self, spec: str, tensor: str) -> tuple[str, str] | None:
        """(content hash, fingerprint) last measured for ``tensor`` of source ``spec``. The hash is
        trusted while the source still reports that fingerprint; otherwise it is only a guess,
        which whoever loads the tensor checks."""
        key = self._last_key(spec, tensor)
        value = _unsealed(self._last_path(key), key)
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            return value[0], value[1]
        return None

    def set_last_hash(self, spec: str, tensor: str, tensor_hash: str, fingerprint: str) -> None:
        if self.last_hash(spec, tensor) != (tensor_hash, fingerprint):
            key = self._last_key(spec, tensor)
            write_atomic(self._last_path(key), _sealed(key, [tensor_hash, fingerprint]))


class SolutionCache:
    """Solved sweeps, keyed by the problem's content, the budgets and the solver: a rerun that
    changes nothing the optimizer sees does not solve again."""

    def __init__(self, root: Path) -> None:
        self.root = root / "solutions"

    @staticmethod
    def key(arrays: list[np.ndarray], labels: list[str]) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(SOLUTION_VERSION.encode())
        for a in arrays:
            h.update(content_hash(np.asarray(a)).encode())
        for label in labels:
            h.update(label.encode())
        return h.hexdigest()

    def get(self, key: str, n_items: int, n_options: int) -> list[dict[str, Any]] | None:
        """The sweep's answers (dse.ilp.Answer.record: one per budget, its point as [label,
        option per item] or null), or None when absent or damaged: a wrong field or type, a choice
        index out of range, or a failed check. The caller still re-verifies each answer against
        the problem (caps, bounds) before trusting it."""
        data = _unsealed(self.root / f"{key}.json", key)
        if not isinstance(data, list):
            return None
        for a in data:
            if not (isinstance(a, dict) and set(a) == _ANSWER_FIELDS and _number(a["budget_bpw"])
                    and isinstance(a["status"], str) and isinstance(a["note"], str)
                    and all(a[k] is None or _number(a[k]) for k in ("gap", "lower"))):
                return None
            point = a["point"]
            if point is not None and not (isinstance(point, list) and len(point) == n_items + 1
                                          and isinstance(point[0], str)
                                          and all(type(k) is int and 0 <= k < n_options for k in point[1:])):
                return None
        return data

    def put(self, key: str, answers: list[dict[str, Any]]) -> None:
        write_atomic(self.root / f"{key}.json", _sealed(key, answers))


_ANSWER_FIELDS = {"budget_bpw", "status", "gap", "lower", "note", "point"}


def _number(v: object) -> bool:
    return type(v) in (int, float)
