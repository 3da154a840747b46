"""Hugging Face safetensors checkpoints: one file, a directory of them, or a sharded checkpoint.

F32, F16 and BF16 tensors are read without torch (BF16 by its bit pattern), FP8 ones with their
scales (:mod:`models.fp8`). Each stored tensor becomes (out, in) matrices by one rule of
:mod:`models.layouts`. Every header entry is checked against the file size before anything is
loaded, so a truncated or corrupt file gives a one-line error naming the tensor. Format: the
safetensors specification (https://github.com/huggingface/safetensors, "Format"): u64
little-endian header size, a JSON header of ``{name: {dtype, shape, data_offsets}}``, then the data.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from models import fp8, layouts
from models.errors import SourceError
from models.fp8 import FP8_DTYPES
from models.layouts import Layout
from models.source import TensorInfo, bf16_to_float32, file_stamp, stamps_changed

_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
"""Float dtypes read from safetensors, with their size in bytes."""
_NUMPY_DTYPE = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "F8_E4M3": "u1", "F8_E5M2": "u1"}
"""How each dtype's bytes are mapped (BF16 and FP8 as bit patterns, decoded on load)."""
INDEX_NAME = "model.safetensors.index.json"
_MAX_HEADER_BYTES = 100_000_000
_PACKED_DTYPES = frozenset({"I8", "U8", "I16", "U16", "I32", "U32"})
"""Integer weights: packed codes of a quantized checkpoint, never plain weights."""
_SCALE_NAME = re.compile(r"(?:^|[._])(?:weight_scale|input_scale|scale_inv)$")
"""Quantization scales stored beside FP8 weights: never weights themselves."""


class StoredTensor(NamedTuple):
    """One tensor of a safetensors file, as its header describes it."""

    name: str
    dtype: str
    shape: list[int]
    start: int
    """Absolute byte offset of the data in the file."""
    end: int
    """Absolute byte offset just past the data."""


@dataclass(frozen=True)
class _Matrix:
    """Where one (out, in) weight matrix comes from."""

    file: Path
    entry: StoredTensor
    layout: Layout
    scale: tuple[Path, StoredTensor] | None = None
    """An FP8 weight's scale tensor."""


class SafetensorsSource:
    """One ``.safetensors`` file, a directory of them, or a sharded checkpoint with an index.

    Each stored tensor becomes (out, in) matrices by one rule of :mod:`models.layouts` (GPT-2
    Conv1D and Flax kernels transposed, fused 3-D experts split per expert), read from the
    ``config.json`` beside the checkpoint; FP8 weights are dequantized with their scales
    (:mod:`models.fp8`) and flagged pre-quantized. ``label`` counts every non-default rule.
    """

    def __init__(self, path: Path, label: str | None = None) -> None:
        self.path = path
        index = path / INDEX_NAME if path.is_dir() else path if path.name.endswith(".index.json") else None
        owner: dict[str, str] | None = None
        if index is not None and index.exists():
            files, owner = _shards(index)
        else:
            files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        if not files:
            raise SourceError(f"{path}: no .safetensors files in this directory")
        entries: dict[str, tuple[Path, StoredTensor]] = {}
        self._stamps = {file: file_stamp(file) for file in files}  # as read: see fingerprint()
        for file in files:
            for entry in _read_header(file):
                if owner is not None and owner.get(entry.name, file.name) != file.name:
                    continue  # the index says this name lives in another shard
                if entry.name in entries:
                    raise SourceError(
                        f"{path}: tensor {entry.name!r} is in both {entries[entry.name][0].name} and {file.name}, "
                        f"and no {INDEX_NAME} says which is current; remove the stray file or pass one file")
                entries[entry.name] = (file, entry)
        self.stored = entries
        """Every tensor of the checkpoint: name -> (file, header entry), from the index's shard for each."""
        config = layouts.read_config(path)
        self._block = _fp8_block(config, path)
        self._matrices: dict[str, _Matrix] = {}
        self._infos: list[TensorInfo] = []
        rules: Counter[str] = Counter()
        for name, (file, entry) in entries.items():
            if entry.dtype in _PACKED_DTYPES and len(entry.shape) == 2 and name.endswith(("weight", ".qweight")):
                raise SourceError(f"{file}: tensor {name!r} is stored as {entry.dtype}, a packed quantized weight "
                                  "(GPTQ, AWQ, bitsandbytes) sop-dse cannot decode; dequantize the checkpoint to "
                                  "F16/BF16 first")
            if entry.dtype not in _ITEMSIZE or _SCALE_NAME.search(name):
                continue
            scale = self._fp8_scale(entries, file, entry) if entry.dtype in FP8_DTYPES else None
            for matrix_name, layout in layouts.matrices(name, entry.shape, config, file):
                self._matrices[matrix_name] = _Matrix(file, entry, layout, scale)
                self._infos.append(TensorInfo(matrix_name, layout.shape, entry.dtype, scale is not None, layout.rule))
                rules[layout.rule] += layout.rule != layouts.LINEAR
                rules[f"{entry.dtype} dequantized with its scales (pre-quantized)"] += scale is not None
        notes = "; ".join(f"{n} tensors {rule}" for rule, n in rules.items() if n)
        self.label = (label or str(path)) + (f" [{notes}]" if notes else "")

    def _fp8_scale(self, entries: dict[str, tuple[Path, StoredTensor]], file: Path, entry: StoredTensor) -> tuple[Path, StoredTensor]:
        """The scale tensor of FP8 weight ``entry``, checked against its shape."""
        found = entries.get(entry.name + "_scale_inv") or entries.get(entry.name + "_scale")
        if found is None:
            raise SourceError(f"{file}: tensor {entry.name!r} is {entry.dtype} but has no "
                              f"{entry.name + '_scale_inv'!r} block-scale tensor; sop-dse cannot dequantize it "
                              "(add the scales, or dequantize the checkpoint first)")
        if len(entry.shape) != 2:
            raise SourceError(f"{file}: tensor {entry.name!r} is {entry.dtype} with shape {entry.shape}; only 2-D FP8 "
                              "weights are read (dequantize the checkpoint first)")
        scale_file, scale = found
        if scale.dtype not in ("F32", "BF16", "F16") or fp8.scale_kind(
                (entry.shape[0], entry.shape[1]), tuple(scale.shape), self._block) is None:
            raise SourceError(f"{scale_file}: tensor {scale.name!r} has shape {scale.shape}, which is not the block "
                              f"grid of weight {entry.shape} for blocks {list(self._block)}; give "
                              "quantization_config.weight_block_size in config.json beside the checkpoint")
        return found

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def _matrix(self, name: str) -> _Matrix:
        m = self._matrices.get(name)
        if m is None:
            raise SourceError(f"{self.label}: no 2-D float tensor named {name!r}")
        return m

    def fingerprint(self, name: str) -> str:
        m = self._matrix(name)
        stamps = self._stamps[m.file] + ("" if m.scale is None else ";" + self._stamps[m.scale[0]])
        return f"safetensors|{name}|{m.entry}|{m.layout}|{m.scale}|{self._block}|{stamps}"

    def changed(self) -> bool:
        return stamps_changed(self._stamps)

    def load(self, name: str) -> np.ndarray:
        m = self._matrix(name)
        stored = _read_tensor(m.file, m.entry)
        if m.layout.expert is not None:
            stored = stored[m.layout.expert]
        if m.scale is not None:
            scale = _to_float32(_read_tensor(*m.scale), m.scale[1].dtype)
            w = fp8.dequantize(np.asarray(stored), m.entry.dtype, scale, self._block)
        else:
            w = _to_float32(stored, m.entry.dtype)
        # np.array copies: the result never aliases the read-only file mapping
        return np.array(w.T if m.layout.transpose else w, dtype=np.float32, order="C")


def _fp8_block(config: dict[str, Any] | None, path: Path) -> tuple[int, int]:
    """quantization_config.weight_block_size from config.json, or DeepSeek-V3's [128, 128]."""
    quant = (config or {}).get("quantization_config") or {}
    block = quant.get("weight_block_size") if isinstance(quant, dict) else None
    if block is None:
        return fp8.DEFAULT_BLOCK
    if not (isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)):
        raise SourceError(f"{path}: config.json quantization_config.weight_block_size must be two positive "
                          f"integers (got {block!r})")
    return block[0], block[1]


def _shards(index: Path) -> tuple[list[Path], dict[str, str]]:
    """Shard files of a sharded checkpoint and its weight_map (tensor -> shard), checked against each other."""
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
        in_shard[shard] = {entry.name for entry in _read_header(file)}
    for name, shard in items:
        if name not in in_shard[shard]:
            raise SourceError(f"{index}: tensor {name!r} is not in its shard {shard!r}; re-download the checkpoint")
    return [index.parent / shard for shard in shards], dict(items)


def _read_header(file: Path) -> list[StoredTensor]:
    """Every tensor's header entry, read without loading data.

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
        itemsize = _ITEMSIZE.get(dtype)
        if itemsize is not None and end - begin != int(np.prod(shape, dtype=np.int64)) * itemsize:
            raise SourceError(f"{file}: tensor {name!r} has a corrupt header entry "
                              f"({end - begin} bytes for shape {shape} {dtype}); re-download the file")
        if 8 + size + end > file_size:
            raise SourceError(f"{file}: tensor {name!r} is truncated (file too short)")
        out.append(StoredTensor(name, dtype, shape, 8 + size + begin, 8 + size + end))
    return out


def _read_tensor(file: Path, entry: StoredTensor) -> np.ndarray:
    """The stored array (memory-mapped: slicing one expert reads only its bytes)."""
    try:
        return np.memmap(file, dtype=_NUMPY_DTYPE[entry.dtype], mode="r", offset=entry.start,
                         shape=tuple(entry.shape))
    except (OSError, ValueError) as err:
        raise SourceError(f"{file}: tensor {entry.name!r} cannot be read ({err})") from None


def _to_float32(stored: np.ndarray, dtype: str) -> np.ndarray:
    return bf16_to_float32(np.asarray(stored)) if dtype == "BF16" else np.asarray(stored, dtype=np.float32)
