"""Hugging Face safetensors checkpoints: one file, a directory of them, or a sharded checkpoint.

F32, F16 and BF16 tensors are read without torch (BF16 by its bit pattern). Every header entry
is checked against the file size before anything is loaded, so a truncated or corrupt file
gives a one-line error naming the tensor. Format: the safetensors specification
(https://github.com/huggingface/safetensors, "Format"): u64 little-endian header size, a JSON
header of ``{name: {dtype, shape, data_offsets}}``, then the data.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from models.errors import SourceError
from models.source import TensorInfo, bf16_to_float32

_SAFETENSORS_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
"""Float dtypes read from safetensors, with their size in bytes."""
INDEX_NAME = "model.safetensors.index.json"
_MAX_HEADER_BYTES = 100_000_000


class SafetensorsSource:
    """One ``.safetensors`` file, a directory of them, or a sharded checkpoint with an index."""

    def __init__(self, path: Path, label: str | None = None) -> None:
        self.path = path
        self.label = label or str(path)
        index = path / INDEX_NAME if path.is_dir() else path if path.name.endswith(".index.json") else None
        if index is not None and index.exists():
            files = _shards(index)
        else:
            files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        if not files:
            raise SourceError(f"{path}: no .safetensors files in this directory")
        self._where: dict[str, Path] = {}
        self._infos: list[TensorInfo] = []
        for file in files:
            for name, dtype, shape in _read_header(file):
                if len(shape) == 2 and dtype in _SAFETENSORS_ITEMSIZE and min(shape) > 0:
                    self._where[name] = file
                    self._infos.append(TensorInfo(name, (shape[0], shape[1]), dtype))

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def load(self, name: str) -> np.ndarray:
        file = self._where.get(name)
        if file is None:
            raise SourceError(f"{self.label}: no 2-D float tensor named {name!r}")
        return _load_safetensor(file, name)


def _shards(index: Path) -> list[Path]:
    """Shard files of a sharded checkpoint, checked against the index's weight_map."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        items = [(str(name), str(shard)) for name, shard in weight_map.items()]
    except OSError as err:
        raise SourceError(f"{index}: cannot read ({err.strerror})") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SourceError(f"{index}: corrupt index (no weight_map object); re-download it") from None
    shards = sorted({shard for _, shard in items})
    in_shard = {}
    for shard in shards:
        file = index.parent / shard
        if not file.exists():
            first = next(name for name, s in items if s == shard)
            raise SourceError(f"{index}: shard {shard!r} (tensor {first!r}) is missing; re-download it")
        in_shard[shard] = {name for name, _, _ in _read_header(file)}
    for name, shard in items:
        if name not in in_shard[shard]:
            raise SourceError(f"{index}: tensor {name!r} is not in its shard {shard!r}; re-download the checkpoint")
    return [index.parent / shard for shard in shards]


def _read_header(file: Path) -> list[tuple[str, str, list[int]]]:
    """(name, dtype, shape) of every tensor, read from the JSON header without loading data.

    Checks every entry against the file: a truncated file or corrupt entry names the tensor.
    """
    try:
        with open(file, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise SourceError(f"{file}: truncated safetensors file (no header)")
            (size,) = struct.unpack("<Q", head)
            if size > _MAX_HEADER_BYTES:
                raise SourceError(f"{file}: corrupt safetensors header (claims {size} bytes)")
            raw = fh.read(size)
            file_size = file.stat().st_size
    except OSError as err:
        raise SourceError(f"{file}: cannot read ({err.strerror})") from None
    if len(raw) < size:
        raise SourceError(f"{file}: truncated safetensors file (header cut short)")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SourceError(f"{file}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise SourceError(f"{file}: corrupt safetensors header (not a JSON object)")
    out = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = str(meta["dtype"]), [int(n) for n in meta["shape"]]
            begin, end = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{file}: tensor {name!r} has a corrupt header entry; re-download the file") from None
        itemsize = _SAFETENSORS_ITEMSIZE.get(dtype)
        if itemsize is not None and end - begin != int(np.prod(shape, dtype=np.int64)) * itemsize:
            raise SourceError(f"{file}: tensor {name!r} has a corrupt header entry "
                              f"({end - begin} bytes for shape {shape} {dtype}); re-download the file")
        if 8 + size + end > file_size:
            raise SourceError(f"{file}: tensor {name!r} is truncated (file too short)")
        out.append((name, dtype, shape))
    return out


def _load_safetensor(file: Path, name: str) -> np.ndarray:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="numpy") as fh:
            if fh.get_slice(name).get_dtype() == "BF16":
                return _bf16_tensor(file, name)
            array = fh.get_tensor(name)
    except (SafetensorError, OSError, ValueError) as err:
        raise SourceError(f"{file}: tensor {name!r} cannot be read ({err})") from None
    return np.ascontiguousarray(array, dtype=np.float32)


def _bf16_tensor(file: Path, name: str) -> np.ndarray:
    with open(file, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        meta = json.loads(fh.read(size))[name]
        begin, end = meta["data_offsets"]
        fh.seek(8 + size + begin)
        raw = np.frombuffer(fh.read(end - begin), dtype="<u2")
    if raw.size != int(np.prod(meta["shape"])):
        raise SourceError(f"{file}: tensor {name!r} is truncated")
    return bf16_to_float32(raw).reshape(meta["shape"])
