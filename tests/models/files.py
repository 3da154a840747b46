"""Writers for the checkpoint files the tests read back (independent of the readers under test)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_DTYPE_NAMES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64"}


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Top 16 bits of float32 (truncation): exactly representable BF16 values as uint16."""
    return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """Write a safetensors file by hand: {name: (dtype, array)}; BF16 arrays are given as uint16 bits."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_sharded(directory: Path, shards: list[dict[str, tuple[str, np.ndarray]]]) -> None:
    """A sharded HF checkpoint: model-0000i-of-0000n.safetensors + model.safetensors.index.json."""
    directory.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for i, tensors in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(directory / file, tensors)
        weight_map.update(dict.fromkeys(tensors, file))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write_gguf(path: Path, tensors: dict[str, np.ndarray], quantized: dict[str, tuple[np.ndarray, str]] | None = None,
               kv: dict[str, object] | None = None, arch: str | None = "llama") -> None:
    """Write a GGUF file with the gguf package's GGUFWriter.

    Args:
        tensors: float arrays stored as-is (F32/F16), numpy (out, in) order.
        quantized: name -> (float32 array, GGML type name) quantized with ``gguf.quants.quantize``.
        kv: extra metadata (str, int -> u32, list[str] -> string array).
        arch: general.architecture; None drops it (llama.cpp's imatrix files have none).
    """
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    writer = GGUFWriter(str(path), arch or "none")
    if arch is None:
        writer.kv_data[0].pop("general.architecture")
    for key, value in (kv or {}).items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_array(key, list(value))
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    for name, (array, type_name) in (quantized or {}).items():
        qtype = GGMLQuantizationType[type_name]
        writer.add_tensor(name, quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def truncate(path: Path, keep_bytes: int) -> None:
    path.write_bytes(path.read_bytes()[:keep_bytes])
