"""The weight-source interface every reader implements; readers depend on this module only.

A source is a set of named 2-D weight matrices loaded one at a time as float32
(:class:`WeightSource`). A source that can also produce any subset of a tensor's rows without
materialising the rest (the synthetic generator) implements :class:`RowSource`; sampled
measurement (:mod:`models.sampling`) then never holds a whole tensor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """What a source knows about one weight matrix before loading it."""

    name: str
    shape: tuple[int, int]
    """(out_features, in_features)."""
    stored_dtype: str
    """Dtype as stored in the source: F32, F16, BF16, Q4_1..."""
    prequantized: bool = False
    """Stored in a quantized type: absolute errors measured on it are biased."""
    layout: str = "(out, in)"
    """How the stored tensor became this (out, in) matrix (models/layouts.py), e.g. a transposed Conv1D."""

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


class WeightSource(Protocol):
    """A set of named 2-D weight matrices, loaded one at a time as float32."""

    label: str

    def infos(self) -> list[TensorInfo]: ...

    def load(self, name: str) -> np.ndarray: ...

    def fingerprint(self, name: str) -> str:
        """A cheap identity of tensor ``name``'s values as this source reads them, found without
        reading them (file readers stamp their files when opened): equal fingerprints promise
        equal values. A warm run trusts the content hash it cached under a fingerprint and reads
        nothing; any other fingerprint sends the tensor to be read and hashed."""
        ...

    def changed(self) -> bool:
        """True when a file this source read when it was opened has since been rewritten,
        replaced or removed (found by re-stat, nothing read): the source no longer reads what
        its fingerprints promise, and must be opened again."""
        ...


def file_stamp(path: Path) -> str:
    """Resolved path, size, modification time [ns] and inode of a file: one of them changes
    whenever the file is rewritten or replaced (the rule git's index and make rely on)."""
    st = os.stat(path)
    return f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def stamps_changed(stamps: Mapping[Path, str]) -> bool:
    """True when any file's :func:`file_stamp` differs from ``stamps[file]`` or the file is gone."""
    try:
        return any(file_stamp(path) != stamp for path, stamp in stamps.items())
    except OSError:
        return True


@runtime_checkable
class RowSource(WeightSource, Protocol):
    """A source that generates any rows of a tensor alone, equal to the same rows of the whole."""

    def load_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """(len(rows), in_features) float32: rows ``rows`` of tensor ``name``."""
        ...

    def absmax_row(self, name: str) -> int:
        """Index of the row holding the tensor's largest |w|, known without generating the tensor."""
        ...


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """BF16 bit patterns (uint16) -> float32 without torch: BF16 is the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)
