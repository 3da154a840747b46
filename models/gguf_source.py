"""GGUF checkpoints through the ``gguf`` package, dequantized to float32 one tensor at a time.

GGUF lists dimensions innermost first (``[in, out]``); the numpy arrays the reader returns are
already ``(out, in)``. A 3-D tensor of stacked MoE experts (``blk.N.ffn_gate_exps.weight``,
numpy ``(n_expert, out, in)``) is listed once per expert as ``name[e]``. A tensor whose stored
type is not a float type (Q4_1, Q8_0, ...) is flagged ``prequantized``: errors measured on it are
biased, since the weights already sit on a quantization grid (docs/weights.md, statistic 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.errors import SourceError
from models.source import TensorInfo, file_stamp, stamps_changed

FLOAT_TYPES = frozenset({"F32", "F16", "BF16", "F64"})


class _TruncatedTensor(Exception):
    """Raised while opening: the named tensor's data runs past the end of the file."""


def open_gguf_reader(path: Path) -> Any:
    """A ``gguf.GGUFReader`` for ``path``; unreadable or truncated files raise a one-line SourceError."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

    class CheckedReader(GGUFReader):  # type: ignore[misc]
        """GGUFReader that names the first tensor whose data is missing from a truncated file."""

        def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
            for field in fields:
                # parts of a tensor-info field: name_len, name, n_dims, dims, type, offset
                dims, raw_type, offset = field.parts[3], field.parts[4], field.parts[5]
                try:
                    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(int(raw_type[0]))]
                except (ValueError, KeyError):
                    raise _TruncatedTensor(f"tensor {field.name!r} has unknown type {int(raw_type[0])}") from None
                end = start_offs + int(offset[0]) + int(np.prod(dims, dtype=np.int64)) * type_size // block
                if end > self.data.size:
                    raise _TruncatedTensor(f"tensor {field.name!r} is truncated (file too short)")
            super()._build_tensors(start_offs, fields)

    try:
        return CheckedReader(str(path))
    except _TruncatedTensor as err:
        raise SourceError(f"{path}: {err}; re-download or re-convert the file") from None
    except OSError as err:
        raise SourceError(f"{path}: cannot read ({err.strerror})") from None
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, MemoryError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SourceError(f"{path}: not a readable GGUF file ({reason}); re-download or re-convert it") from None


class GGUFSource:
    """The 2-D (and per-expert 3-D) weight tensors of one GGUF file."""

    def __init__(self, path: Path, label: str | None = None) -> None:
        self.path = path
        self.label = label or str(path)
        self._stamps = {path: file_stamp(path)}  # as read: see fingerprint()
        reader = open_gguf_reader(path)
        self._where: dict[str, tuple[Any, int | None]] = {}
        self._infos: list[TensorInfo] = []
        for t in reader.tensors:
            dims = [int(d) for d in t.shape]  # ggml order: ne0 = in_features first
            type_name = t.tensor_type.name
            prequantized = type_name not in FLOAT_TYPES
            if len(dims) == 2 and min(dims) > 1:
                self._add(t.name, t, None, (dims[1], dims[0]), type_name, prequantized)
            elif len(dims) == 3 and min(dims) > 1:
                for e in range(dims[2]):
                    self._add(f"{t.name}[{e}]", t, e, (dims[1], dims[0]), type_name, prequantized)

    def _add(self, name: str, tensor: Any, expert: int | None, shape: tuple[int, int], dtype: str,
             prequantized: bool) -> None:
        self._where[name] = (tensor, expert)
        self._infos.append(TensorInfo(name, shape, dtype, prequantized))

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def fingerprint(self, name: str) -> str:
        tensor, expert = self._found(name)
        return f"gguf|{name}|{tensor.data_offset}|{expert}|{self._stamps[self.path]}"

    def changed(self) -> bool:
        return stamps_changed(self._stamps)

    def _found(self, name: str) -> tuple[Any, int | None]:
        found = self._where.get(name)
        if found is None:
            raise SourceError(f"{self.label}: no 2-D tensor named {name!r}")
        return found

    def load(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        tensor, expert = self._found(name)
        data = tensor.data if expert is None else tensor.data[expert]
        try:
            w = data.astype(np.float32) if data.dtype.kind == "f" else dequantize(data, tensor.tensor_type)
        except (ValueError, NotImplementedError, IndexError) as err:
            raise SourceError(f"{self.path}: tensor {name!r} cannot be dequantized ({err})") from None
        return np.ascontiguousarray(w, dtype=np.float32)
