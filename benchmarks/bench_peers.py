"""sop-dse side by side with other quantizers on one tensor: time, throughput and error.

Run: python benchmarks/bench_peers.py [--threads N] [--repeat R] [--elements N]

Peers are optional; each one that is not installed is listed as absent and skipped:
  ml_dtypes (always: a dependency), gguf (a dependency: its numpy Q8_0),
  torch (CPU; ``pip install torch``), torchao (MX and NVFP4 prototypes; ``pip install torchao``),
  bitsandbytes (NF4 on CPU; ``pip install bitsandbytes``).
For each format the peer's quantize + dequantize round trip is timed against sop-dse's
``quantize()`` + ``dequantize()`` and ``measure()`` of the same candidate on the same tensor,
with the same thread count. "ratio" is the peer's time / sop-dse's round-trip time (> 1: sop-dse
is faster). Errors (rel. MSE) are each tool's own reconstruction: equal errors mean equal
rounding rules, small differences come from scale rounding details (noted per row). Never asserts.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rich.console import Console

from bench_quant import best_of  # the script's own folder is on sys.path
from dse import render
from quant import dequantize, measure, parse_candidate, quantize

Peer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Row:
    label: str
    candidate: str
    """The sop-dse candidate that encodes the same format."""
    package: str
    build: Callable[[int], Peer]
    """threads -> a float32 (rows, cols) -> float32 round trip (imports the package lazily)."""
    note: str = ""


def _torch(threads: int):
    import torch

    torch.set_num_threads(threads)
    return torch


def _cast(dtype_name: str) -> Callable[[int], Peer]:
    def build(threads: int) -> Peer:
        import ml_dtypes

        dtype = getattr(ml_dtypes, dtype_name)
        return lambda w: w.astype(dtype).astype(np.float32)
    return build


def _torch_cast(threads: int) -> Peer:
    torch = _torch(threads)
    return lambda w: torch.from_numpy(w).to(torch.float8_e4m3fn).to(torch.float32).numpy()


def _gguf_q8_0(threads: int) -> Peer:
    from gguf import GGMLQuantizationType, dequantize as gg_dequantize, quantize as gg_quantize

    q8 = GGMLQuantizationType.Q8_0
    return lambda w: gg_dequantize(gg_quantize(w, q8), q8).reshape(w.shape)


def _torchao_mx(elem: str, block: int) -> Callable[[int], Peer]:
    def build(threads: int) -> Peer:
        torch = _torch(threads)
        from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx

        dtype = {"fp4": torch.float4_e2m1fn_x2, "fp8": torch.float8_e4m3fn}.get(elem, None)
        if elem == "fp6":
            from torchao.prototype.mx_formats.constants import DTYPE_FP6_E2M3 as dtype

        def run(w: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(w)
            scale, data = to_mx(x, dtype, block)
            return to_dtype(data, scale, dtype, block, torch.float32).numpy()
        return run
    return build


def _torchao_nvfp4(threads: int) -> Peer:
    torch = _torch(threads)
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

    def run(w: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(w)
        scale = per_tensor_amax_to_scale(x.abs().max())
        q = NVFP4Tensor.to_nvfp4(x, per_tensor_scale=scale)
        convert = getattr(q, "dequantize", None) or q.to_dtype  # renamed across torchao versions
        return convert(torch.float32).numpy()
    return run


def _bnb_nf4(threads: int) -> Peer:
    torch = _torch(threads)
    import bitsandbytes.functional as bnb

    def run(w: np.ndarray) -> np.ndarray:
        packed, state = bnb.quantize_4bit(torch.from_numpy(w), blocksize=64, quant_type="nf4")
        return bnb.dequantize_4bit(packed, state).float().numpy()
    return run


ROWS = (
    Row("E4M3 cast (no scales)", "E4M3sFP32@layer:tnone", "ml_dtypes", _cast("float8_e4m3fn"),
        "sop-dse adds a tensor scale"),
    Row("E4M3 cast (no scales)", "E4M3sFP32@layer:tnone", "torch", _torch_cast),
    Row("MXFP4 (E2M1, UE8M0 / 32)", "E2M1sUE8M0@32", "torchao", _torchao_mx("fp4", 32)),
    Row("MXFP6 (E2M3, UE8M0 / 32)", "E2M3sUE8M0@32", "torchao", _torchao_mx("fp6", 32)),
    Row("MXFP8 (E4M3, UE8M0 / 32)", "E4M3sUE8M0@32", "torchao", _torchao_mx("fp8", 32)),
    Row("NVFP4 (E2M1, E4M3 / 16, FP32)", "E2M1sE4M3@16", "torchao", _torchao_nvfp4),
    Row("NF4 (FP32 absmax / 64)", "NF4sFP32@64", "bitsandbytes", _bnb_nf4),
    Row("Q8_0 (INT8, FP16 / 32)", "INT8sE5M10@32", "gguf", _gguf_q8_0,
        "gguf rounds w/ unrounded scale"),
)


def rel_mse(w: np.ndarray, w_hat: np.ndarray) -> float:
    d = (w_hat.astype(np.float64) - w).reshape(-1)
    w64 = w.astype(np.float64).reshape(-1)
    return float(np.einsum("i,i->", d, d) / np.einsum("i,i->", w64, w64))  # no BLAS: see quant.metrics


def installed(package: str) -> str | None:
    """The package's version, or None when it cannot be imported."""
    try:
        importlib.import_module(package)
    except Exception:  # noqa: BLE001 - an optional peer may fail to import in any way
        return None
    return importlib.metadata.version(package)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="threads for every tool (default: all cores)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--elements", type=int, default=1 << 24)
    args = parser.parse_args()
    threads = args.threads or os.cpu_count() or 1
    w = np.random.default_rng(0).standard_normal(args.elements, dtype=np.float32).reshape(-1, 4096)
    console = Console(width=200)

    versions = {p: installed(p) for p in sorted({r.package for r in ROWS})}
    console.print("peers: " + ", ".join(f"{p} {v}" if v else f"{p} absent (skipped)" for p, v in versions.items()))

    ours: dict[str, tuple[float, float, float]] = {}
    table = render.table(
        f"peers vs sop-dse, {w.size:,} Gaussian weights ({w.shape[0]}x{w.shape[1]}), {threads} thread(s), "
        f"best of {args.repeat}",
        ["format", "peer", "peer [ms]", "sop-dse q+dq [ms]", "sop-dse measure [ms]",
         "peer / sop-dse q+dq [x]", "rel. MSE peer", "rel. MSE sop-dse", "note"])
    for row in ROWS:
        if versions[row.package] is None:
            continue
        try:
            peer = row.build(threads)
            peer(w[:64])  # warm up (imports, kernels)
            t_peer = best_of(args.repeat, lambda: peer(w))
            err_peer = rel_mse(w, peer(w))
        except Exception as exc:  # noqa: BLE001 - a peer's API may differ by version: report, go on
            table.add_row(row.label, row.package, "failed", "", "", "", "", "", f"{type(exc).__name__}: {exc}"[:60])
            continue
        if row.candidate not in ours:
            c = parse_candidate(row.candidate)
            dequantize(quantize(w[:64], c))
            t_rt = best_of(args.repeat, lambda: dequantize(quantize(w, c, threads=threads), threads=threads))
            t_measure = best_of(args.repeat, lambda: measure(w, c, threads=threads))
            ours[row.candidate] = (t_rt, t_measure, measure(w, c, threads=threads).rel_mse)
        t_rt, t_measure, err = ours[row.candidate]
        table.add_row(row.label, f"{row.package} {versions[row.package]}", f"{t_peer * 1e3:.1f}",
                      f"{t_rt * 1e3:.1f}", f"{t_measure * 1e3:.1f}", f"{t_peer / t_rt:.2f}",
                      f"{err_peer:.4e}", f"{err:.4e}", row.note)
    console.print(table)


if __name__ == "__main__":
    main()
