"""Activation statistics: per linear layer, the mean squared activation of each input channel.

For y = x W^T the expected output error of a weight error is sum_j h_j ||dW[:, j]||^2 with
h_j = E[x_j^2] (quant/metrics.py): these vectors are the ``act`` argument of
:func:`quant.measure`. Readers:

* llama.cpp imatrix, GGUF format (``llama-imatrix -o x.gguf``): keys ``general.type = imatrix``,
  ``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``; per weight ``W`` the F32
  tensors ``W.in_sum2`` (n_mat x n_per_row sums of x^2) and ``W.counts`` (n_mat activation
  counts), n_mat > 1 for stacked MoE experts. Mean = in_sum2 / counts
  (llama.cpp ``tools/imatrix/imatrix.cpp``, ``save_imatrix``).
* llama.cpp legacy ``.dat``: int32 entry count; per entry int32 name length, name, int32 ncall,
  int32 nval, float32[nval] holding mean * ncall; then optional int32 chunk count and dataset
  name (``save_imatrix_legacy``). Mean = values / ncall.
* ``.safetensors`` / ``.npz`` of vectors keyed by weight name: (in,) or (n_experts, in).
* ``minilm``: computed here by running the packaged MiniLM on a built-in text (models/minilm.py).

:meth:`ActivationStats.for_tensor` maps a vector to any weight tensor by exact name, or by
(layer, role, expert) across naming schemes (an imatrix written for GGUF names applies to an HF
checkpoint), with q/k/v (and gate/up) sharing one input.
"""

from __future__ import annotations

import functools
import struct
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import SourceError
from models.roles import parse_name
from models.source import TensorInfo

# Roles fed by the same input activation: one statistics vector serves them all.
_INPUT_GROUP = {"q": "attn_in", "k": "attn_in", "v": "attn_in", "qkv": "attn_in",
                "gate": "mlp_in", "up": "mlp_in", "gate_up": "mlp_in",
                "expert_gate": "expert_in", "expert_up": "expert_in"}


def _base_name(name: str) -> str:
    """Weight name without a trailing expert index ``[e]`` or ``.weight``."""
    name = name.split("[", 1)[0]
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _group_key(name: str) -> tuple[str, int | None]:
    key = parse_name(name)
    return _INPUT_GROUP.get(key.role, key.role), key.layer


@dataclass(frozen=True)
class ActivationStats:
    """Mean squared input activation per channel, keyed by weight name (as the file names them)."""

    source: str
    vectors: Mapping[str, np.ndarray]
    """(n_mat * in,) or (n_mat, in) float64; NaN where a MoE expert saw no tokens."""
    _by_base: dict[str, str] = field(init=False, repr=False, compare=False)
    _by_group: dict[tuple[str, int | None], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_base", {_base_name(n): n for n in self.vectors})
        by_group: dict[tuple[str, int | None], str] = {}
        for n in self.vectors:
            group = _group_key(n)
            if group[0] != "other":
                by_group.setdefault(group, n)
        object.__setattr__(self, "_by_group", by_group)

    def for_tensor(self, name: str, in_features: int) -> np.ndarray | None:
        """The (in_features,) vector for weight ``name``, or None when the file has none for it
        (no matching entry, or a MoE expert that no token reached).

        Raises:
            SourceError: the matching vector has the wrong length.
        """
        key = self._by_base.get(_base_name(name)) or self._by_group.get(_group_key(name))
        if key is None:
            return None
        flat = np.asarray(self.vectors[key], dtype=np.float64).reshape(-1)
        if flat.size % in_features:
            raise SourceError(f"{self.source}: activation vector {key!r} has {flat.size} entries, "
                              f"tensor {name!r} has {in_features} input channels")
        rows = flat.reshape(-1, in_features)
        expert = parse_name(name).expert
        if rows.shape[0] > 1 and expert is None:
            raise SourceError(f"{self.source}: {key!r} holds {rows.shape[0]} expert vectors, but tensor "
                              f"{name!r} names no expert")
        vector = rows[expert if rows.shape[0] > 1 else 0]
        return None if np.isnan(vector).any() else vector

    def map_to(self, infos: Iterable[TensorInfo]) -> dict[str, np.ndarray]:
        """Vectors for every tensor of a weight source that has one."""
        out = {}
        for info in infos:
            vector = self.for_tensor(info.name, info.shape[1])
            if vector is not None:
                out[info.name] = vector
        return out


def read_imatrix_gguf(path: Path) -> ActivationStats:
    """A llama.cpp imatrix in GGUF format."""
    from models.gguf_source import open_gguf_reader

    reader = open_gguf_reader(path)
    tensors = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors}
    vectors = {}
    for name, sums in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        weight = name[: -len(".in_sum2")]
        counts = tensors.get(weight + ".counts")
        if counts is None:
            raise SourceError(f"{path}: tensor {weight + '.counts'!r} is missing (needed by {name!r})")
        counts = counts.reshape(-1, 1)
        if sums.size % counts.shape[0]:
            raise SourceError(f"{path}: tensor {name!r} has {sums.size} values for {counts.shape[0]} counts")
        if not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise SourceError(f"{path}: {weight + '.counts'!r} holds NaN, Inf or negative counts; "
                              "regenerate the imatrix")
        sums = sums.reshape(counts.shape[0], -1)
        counted = counts[:, 0] > 0
        with np.errstate(invalid="ignore"):
            bad = counted & ~np.all(np.isfinite(sums) & (sums >= 0), axis=1)
        for i in np.flatnonzero(bad)[:1]:  # the first bad matrix names the problem
            _check_values(path, weight, sums[i], f" (matrix {i}, {counts[i, 0]:g} tokens)")
        with np.errstate(invalid="ignore", divide="ignore"):
            vectors[weight] = np.where(counted[:, None], sums / counts, np.nan)  # NaN: no tokens
    if not vectors:
        raise SourceError(f"{path}: no '*.in_sum2' tensors: not a llama.cpp imatrix GGUF file")
    return ActivationStats(str(path), vectors)


def read_imatrix_dat(path: Path) -> ActivationStats:
    """A llama.cpp imatrix in the legacy ``.dat`` format."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SourceError(f"{path}: cannot read ({err.strerror})") from None
    offset = 0
    entry = "(header)"

    def take(fmt: str) -> tuple[int, ...]:
        nonlocal offset
        size = struct.calcsize(fmt)
        if offset + size > len(data):
            raise SourceError(f"{path}: truncated imatrix file at entry {entry!r}")
        values = struct.unpack_from(fmt, data, offset)
        offset += size
        return values

    (n_entries,) = take("<i")
    if not 0 < n_entries < 1_000_000:
        raise SourceError(f"{path}: corrupt imatrix file (claims {n_entries} entries)")
    vectors = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        if not 0 < length < 4096:
            raise SourceError(f"{path}: corrupt imatrix file (name length {length} after entry {entry!r})")
        entry = bytes(take(f"<{length}s")[0]).decode("utf-8", errors="replace")
        ncall, nval = take("<ii")
        if nval < 1 or ncall < 1 or offset + 4 * nval > len(data):
            raise SourceError(f"{path}: entry {entry!r} is truncated or corrupt (ncall {ncall}, nval {nval})")
        values = np.frombuffer(data, dtype="<f4", count=nval, offset=offset)
        offset += 4 * nval
        _check_values(path, entry, values, f" ({ncall} calls)")
        vectors[entry] = values.astype(np.float64) / ncall  # stored as mean * ncall
    return ActivationStats(str(path), vectors)


def read_vectors(path: Path) -> ActivationStats:
    """A ``.safetensors`` or ``.npz`` file of (in,) or (n_experts, in) vectors keyed by weight name."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                vectors = {k: archive[k].astype(np.float64) for k in archive.files}
        else:
            vectors = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
    except (SafetensorError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise SourceError(f"{path}: corrupt activation file ({type(err).__name__}: {err})") from None
    except OSError as err:
        raise SourceError(f"{path}: cannot read ({err})") from None
    for name, v in vectors.items():
        if v.ndim not in (1, 2):
            raise SourceError(f"{path}: vector {name!r} must be 1-D (in,) or 2-D (n_experts, in), got {v.shape}")
        _check_values(path, name, v, "")
    return ActivationStats(str(path), vectors)


def _check_values(path: Path, name: str, values: np.ndarray, where: str) -> None:
    """Statistics that counted tokens must be finite and >= 0, in every file format alike: a NaN
    is never read as "no statistics" (only a zero token count means that)."""
    bad = int(np.count_nonzero(~(np.isfinite(values) & (values >= 0))))
    if bad:
        raise SourceError(f"{path}: {name!r} has {bad} NaN, Inf or negative values{where}; "
                          "regenerate the statistics")


@functools.cache  # a forward pass over the calibration text: computed once per process
def minilm_activations() -> ActivationStats:
    """Mean squared input activations of every MiniLM linear layer on the built-in calibration text."""
    from models.minilm import encode
    from models.texts import CALIBRATION

    vectors = encode(CALIBRATION).mean_sq
    for vector in vectors.values():
        vector.setflags(write=False)  # shared by every caller in the process
    return ActivationStats("minilm (computed on the built-in calibration text)", vectors)


def load_activations(spec: str) -> ActivationStats:
    """Activation statistics from ``minilm`` or a file (.gguf imatrix, .dat imatrix, .safetensors, .npz)."""
    if spec == "minilm":
        return minilm_activations()
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"activations {spec!r}: no such file; use minilm, an imatrix (.gguf or .dat), "
                          ".safetensors or .npz")
    if path.suffix == ".gguf":
        return read_imatrix_gguf(path)
    if path.suffix in (".safetensors", ".npz"):
        return read_vectors(path)
    return read_imatrix_dat(path)
