"""Measurement cache: one small JSON file per (tensor content, candidate, activations, code version).

Entries are written atomically (temp file + rename in the same directory), so a run killed at
any point leaves only complete entries, and a restart re-measures only what is missing.
Changing budgets, hardware or the objective never invalidates an entry: none of them is part
of the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dse.atomic import write_atomic

from quant.metrics import ErrorStats

# Bump when a change to quant/ alters measured numbers: old entries are then ignored.
CACHE_VERSION = "sop-dse-measure-1"
SOLUTION_VERSION = "sop-dse-solution-2"  # bump when the stored sweep format changes


def content_hash(array: np.ndarray | None) -> str:
    """BLAKE2b of an array's dtype, shape and bytes ('' for None)."""
    if array is None:
        return ""
    a = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.view(np.uint8).reshape(-1).data)
    return h.hexdigest()


class MeasurementCache:
    """Measured ErrorStats on disk, keyed by content."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def key(self, tensor_hash: str, candidate: str, act_hash: str) -> str:
        return hashlib.blake2b(f"{CACHE_VERSION}|{tensor_hash}|{candidate}|{act_hash}".encode(),
                               digest_size=16).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ErrorStats | None:
        try:
            data = json.loads(self._path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None  # a missing or unreadable entry is simply measured again
        return ErrorStats(**{k: (float("nan") if v is None else v) for k, v in data.items()})

    def put(self, key: str, stats: ErrorStats) -> None:
        payload = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(stats).items()}
        write_atomic(self._path(key), json.dumps(payload))

    def _last_path(self, spec: str, tensor: str) -> Path:
        key = hashlib.blake2b(f"{spec}|{tensor}".encode(), digest_size=16).hexdigest()
        return self.root / "tensors" / f"{key}.json"

    def last_hash(self, spec: str, tensor: str) -> str | None:
        """The content hash last measured for ``tensor`` of source ``spec`` (a guess: the
        weights may have changed since; whoever loads the tensor checks it)."""
        try:
            value = json.loads(self._last_path(spec, tensor).read_text()).get("hash")
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def set_last_hash(self, spec: str, tensor: str, tensor_hash: str) -> None:
        if self.last_hash(spec, tensor) != tensor_hash:
            write_atomic(self._last_path(spec, tensor), json.dumps({"hash": tensor_hash}))


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

    def get(self, key: str) -> list[list] | None:
        try:
            return json.loads((self.root / f"{key}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, choices: list[list]) -> None:
        write_atomic(self.root / f"{key}.json", json.dumps(choices))
