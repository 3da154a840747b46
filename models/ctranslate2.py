"""CTranslate2 ``model.bin`` files (binary version 6), possibly split into consecutive parts.

Layout (docs/weights.md, "File layouts"; written by CTranslate2's ``specs/model_spec.py``):
u32 version, string spec name, u32 revision, u32 variable count, then per variable: string name,
u8 rank, u32 dims[rank], u8 dtype, u32 byte count, data. Strings are u16 length + bytes. The
parts are memory-mapped and read as one concatenated file; only the tensor being loaded is copied
into memory.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import SourceError
from models.source import TensorInfo, bf16_to_float32, file_stamp, stamps_changed

# CTranslate2 DataType enum: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16
_DTYPES: dict[int, tuple[str, np.dtype[Any]]] = {
    0: ("F32", np.dtype("<f4")), 4: ("F16", np.dtype("<f2")), 5: ("BF16", np.dtype("<u2")),
}
_SUPPORTED_VERSION = 6


class _Parts:
    """Consecutive files read as one byte string, without loading them."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)
        try:
            self.maps = [np.memmap(f, dtype=np.uint8, mode="r") for f in self.files]
        except (OSError, ValueError) as err:
            raise SourceError(f"{self.files[0]}: cannot read ({err})") from None
        self.starts = np.cumsum([0] + [m.size for m in self.maps])

    @property
    def size(self) -> int:
        return int(self.starts[-1])

    def read(self, offset: int, n: int) -> np.ndarray:
        """Bytes [offset, offset + n) as a uint8 array (copied only when they span two parts)."""
        pieces = []
        end = offset + n
        for start, stop, m in zip(self.starts[:-1], self.starts[1:], self.maps, strict=True):
            lo, hi = max(offset, start), min(end, stop)
            if lo < hi:
                pieces.append(m[lo - start:hi - start])
        data = pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else np.empty(0, np.uint8)
        if data.size != n:
            raise EOFError
        return data


class CTranslate2Source:
    """The 2-D float weight matrices of a CTranslate2 model (position encodings left out)."""

    def __init__(self, parts: Sequence[Path], label: str | None = None) -> None:
        self.parts = _Parts(parts)
        self._stamps = {part: file_stamp(part) for part in parts}  # as read: see fingerprint()
        self.label = label or str(parts[0])
        self._where: dict[str, tuple[int, tuple[int, int], int]] = {}
        self._infos: list[TensorInfo] = []
        self._index()

    def _index(self) -> None:
        offset = 0
        name = "(header)"

        def take(fmt: str) -> int:
            nonlocal offset
            size = struct.calcsize(fmt)
            (value,) = struct.unpack(fmt, self.parts.read(offset, size).tobytes())
            offset += size
            return int(value)

        def text() -> str:
            nonlocal offset
            n = take("<H")
            raw = self.parts.read(offset, n).tobytes()
            offset += n
            return raw.rstrip(b"\0").decode("utf-8", errors="replace")

        try:
            version = take("<I")
            if version != _SUPPORTED_VERSION:
                raise SourceError(f"{self.parts.files[0]}: CTranslate2 binary version {version} is not "
                                  f"supported (need {_SUPPORTED_VERSION})")
            text(), take("<I")  # spec name, revision
            for _ in range(take("<I")):
                name = text()
                dims = [take("<I") for _ in range(take("<B"))]
                dtype_code, nbytes = take("<B"), take("<I")
                if offset + nbytes > self.parts.size:
                    raise EOFError
                known = _DTYPES.get(dtype_code)
                if known and len(dims) == 2 and min(dims) > 1 and "position_encodings" not in name:
                    if nbytes != dims[0] * dims[1] * known[1].itemsize:
                        raise SourceError(f"{self.parts.files[0]}: tensor {name!r} has {nbytes} bytes, "
                                          f"shape {dims} needs {dims[0] * dims[1] * known[1].itemsize}")
                    self._where[name] = (offset, (dims[0], dims[1]), dtype_code)
                    self._infos.append(TensorInfo(name, (dims[0], dims[1]), known[0]))
                offset += nbytes
        except EOFError:
            raise SourceError(f"{self.parts.files[-1]}: truncated CTranslate2 model at tensor {name!r}; "
                              "reinstall the package") from None

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def fingerprint(self, name: str) -> str:
        return f"ctranslate2|{name}|{self._found(name)}|{';'.join(self._stamps.values())}"

    def changed(self) -> bool:
        return stamps_changed(self._stamps)

    def _found(self, name: str) -> tuple[int, tuple[int, int], int]:
        found = self._where.get(name)
        if found is None:
            raise SourceError(f"{self.label}: no 2-D float tensor named {name!r}")
        return found

    def load(self, name: str) -> np.ndarray:
        offset, shape, dtype_code = self._found(name)
        kind, dtype = _DTYPES[dtype_code]
        raw = self.parts.read(offset, shape[0] * shape[1] * dtype.itemsize).view(dtype).reshape(shape)
        return bf16_to_float32(raw) if kind == "BF16" else raw.astype(np.float32)
