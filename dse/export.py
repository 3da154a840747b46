"""Exports of a config that other tools load.

* ``fakequant``: the dequantized weights as a safetensors checkpoint with the source's tensor
  names and dtypes, every other tensor (biases, norms) copied byte for byte, plus the source's
  ``config.json`` and tokenizer files, so transformers or vLLM load it and measure the
  config's accuracy. Each quantized tensor equals ``quant.dequantize`` of its packed form (in
  F32; an F16/BF16 source gets that value rounded to its dtype, to nearest even).
* ``llama.cpp``: a ``--tensor-type`` override per tensor for llama.cpp's ``llama-quantize``,
  when every chosen candidate is a llama.cpp type (Q4_0, Q5_0, Q8_0); otherwise an error
  naming the candidates that are not.

Library API::

    from dse.export import export_fakequant, llama_cpp_overrides
    export_fakequant("out/edge/config-4.5000.yaml", Path("fakequant/edge-4.5"))
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from dse.atomic import replace_dir, staging_dir, write_atomic, write_atomic_chunks
from dse.measurement import activation_source
from dse.package import load_config
from models.roles import parse_name
from models.safetensors_source import SafetensorsSource
from models.sources import open_source
from quant import aliases, dequantize, quantize
from quant.engine import round_bf16
from quant.errors import DseError

CHECKPOINT = "model.safetensors"
_COPIED = (".json", ".txt", ".model")  # config, tokenizer and vocabulary files beside the weights
_NUMPY = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
LLAMA_TYPES = {aliases.lookup(n).canonical: n.lower() for n in ("Q4_0", "Q5_0", "Q8_0")}  # type: ignore[union-attr]
"""Canonical candidate -> llama.cpp ggml type name."""


def _to_dtype(w: np.ndarray, dtype: str) -> bytes:
    """float32 values in the source's dtype, little-endian bytes (BF16: round to nearest even)."""
    if dtype == "BF16":
        return (round_bf16(w).view(np.uint32) >> np.uint32(16)).astype("<u2").tobytes()
    return np.ascontiguousarray(w, dtype=_NUMPY[dtype]).astype(np.dtype(_NUMPY[dtype]).newbyteorder("<")).tobytes()


def _safetensors(spec: str) -> SafetensorsSource:
    source = open_source(spec)
    if not isinstance(source, SafetensorsSource):
        raise DseError(f"weights {spec!r}: a fakequant export needs a safetensors checkpoint (HF layout); "
                       f"this source is {source.label}")
    return source


def export_fakequant(config: str | Path, out: Path, *, weights: str | None = None,
                     on_tensor: Callable[[str], None] | None = None) -> dict:
    """Write ``out/model.safetensors`` (+ config and tokenizer files); returns a summary. The
    directory is built beside ``out`` and swapped in whole (dse.atomic.replace_dir).

    Raises DseError for a multi-source config or a source that is not a safetensors checkpoint.
    """
    cfg = load_config(config)
    if len(cfg.weights) != 1:
        raise DseError(f"{cfg.path}: the config lists {len(cfg.weights)} weight sources; a checkpoint has one "
                       "(explore one model per scenario)")
    label, spec = cfg.weights[0]
    source = _safetensors(weights or spec)
    infos = {i.name: i for i in source.infos()}
    assigned = {name.removeprefix(f"{label}/"): c for name, c in cfg.assignment.items()}
    missing = [t for t in assigned if t not in infos]
    if missing:
        raise DseError(f"{cfg.path}: tensor {missing[0]!r} is not in weights {weights or spec}; "
                       "pass the weights it was explored on")
    acts = None if cfg.activations is None else activation_source(cfg.activations, cfg.act_power)
    # (name, dtype, shape, file, (begin, end) or None for a quantized tensor), as the source resolved them
    entries = [(name, e.dtype, e.shape, file, None if name in assigned else (e.start, e.end))
               for name, (file, e) in sorted(source.stored.items())]

    def chunks() -> Iterator[bytes]:
        header: dict = {"__metadata__": {"format": "pt", "sop_dse_config": str(cfg.path)}}
        offset = 0
        for name, dtype, shape, _, span in entries:
            size = (span[1] - span[0]) if span else int(np.prod(shape)) * (2 if dtype in ("F16", "BF16") else
                                                                            np.dtype(_NUMPY[dtype]).itemsize)
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        yield struct.pack("<Q", len(text)) + text
        for name, dtype, shape, file, span in entries:
            if span is not None:
                with open(file, "rb") as fh:
                    fh.seek(span[0])
                    yield fh.read(span[1] - span[0])
                continue
            info = infos[name]
            w = source.load(name)
            q = quantize(w, assigned[name], act=None if acts is None else acts(info), name=name)
            yield _to_dtype(dequantize(q), dtype)
            if on_tensor:
                on_tensor(name)

    staging = staging_dir(out)  # the checkpoint and its files appear together, or not at all
    try:
        write_atomic_chunks(staging / CHECKPOINT, chunks())
        folder = source.path if source.path.is_dir() else source.path.parent
        copied = []
        for extra in sorted(folder.iterdir()):
            if extra.is_file() and extra.suffix in _COPIED and not extra.name.endswith(".index.json"):
                write_atomic(staging / extra.name, extra.read_bytes())
                copied.append(extra.name)
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"checkpoint": str(out / CHECKPOINT), "quantized": len(assigned), "copied_tensors":
            sum(1 for e in entries if e[4] is not None), "files": copied}


_GGUF_LEAF = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output", "qkv": "attn_qkv",
              "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down", "embed": "token_embd", "lm_head": "output"}
"""Role -> llama.cpp tensor name (gguf-py constants.py MODEL_TENSOR names)."""


def llama_cpp_overrides(config: str | Path) -> list[str]:
    """``--tensor-type PATTERN=TYPE`` arguments for llama-quantize, one per tensor, GGUF names.

    Raises DseError naming every candidate that has no llama.cpp type, or a tensor whose
    llama.cpp name is unknown.
    """
    cfg = load_config(config)
    foreign: dict[str, int] = {}
    for c in cfg.assignment.values():
        if c.name not in LLAMA_TYPES:
            foreign[c.name] = foreign.get(c.name, 0) + 1
    if foreign:
        listed = ", ".join(f"{n} ({k} tensors)" for n, k in sorted(foreign.items()))
        raise DseError(f"{cfg.path}: no llama.cpp type for {listed}; of the candidates, llama.cpp "
                       "runs only Q4_0, Q5_0 and Q8_0: explore with those to export, or use --to fakequant")
    out = []
    for name, c in sorted(cfg.assignment.items()):
        key = parse_name(name.rpartition("/")[2])
        leaf = _GGUF_LEAF.get(key.role)
        if leaf is None:
            raise DseError(f"{cfg.path}: tensor {name!r} (role {key.role}) has no llama.cpp tensor name")
        gguf = f"blk.{key.layer}.{leaf}.weight" if key.layer is not None else f"{leaf}.weight"
        out.append(f"--tensor-type {re.escape(gguf)}={LLAMA_TYPES[c.name]}")
    return out


def write_llama_cpp(config: str | Path, out: Path) -> Path:
    """Write the overrides to ``out/llama-quantize-args.txt``, one argument pair per line."""
    path = out / "llama-quantize-args.txt"
    write_atomic(path, "\n".join(llama_cpp_overrides(config)) + "\n")
    return path
