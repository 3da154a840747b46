"""FP8 checkpoint weights, decoded without torch and rescaled by their stored scales.

Block-FP8 releases (DeepSeek-V3 and many others) store a Linear weight as ``F8_E4M3`` (or
``F8_E5M2``) codes plus a float ``weight_scale_inv`` tensor holding one scale per
``weight_block_size`` block, [128, 128] unless ``config.json``'s ``quantization_config`` says
otherwise. Despite its name the stored value multiplies: w = fp8(code) * scale (DeepSeek-V3
``inference/kernel.py``, ``weight_dequant``). compressed-tensors FP8 checkpoints name a
per-tensor or per-channel scale ``weight_scale`` and apply it the same way. Code values follow
OCP OFP8 (v1.0): E4M3 has no infinities and NaN at S.1111.111; E5M2 is IEEE-like.
"""

from __future__ import annotations

import numpy as np

FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
"""safetensors dtype names of FP8 weights."""
DEFAULT_BLOCK = (128, 128)
"""DeepSeek-V3's weight_block_size, the block-FP8 default."""


def _table(exp_bits: int, man_bits: int, ieee_specials: bool) -> np.ndarray:
    """Float32 value of each of the 256 codes (sign | exponent | mantissa)."""
    code = np.arange(256)
    sign = np.where(code >> 7, -1.0, 1.0)
    exp = (code >> man_bits) & ((1 << exp_bits) - 1)
    man = code & ((1 << man_bits) - 1)
    bias = (1 << (exp_bits - 1)) - 1
    normal = (1.0 + man / (1 << man_bits)) * np.exp2(exp - bias)
    subnormal = man / (1 << man_bits) * 2.0 ** (1 - bias)
    value = sign * np.where(exp == 0, subnormal, normal)
    top = exp == (1 << exp_bits) - 1
    if ieee_specials:  # E5M2: exponent all ones is Inf (mantissa 0) or NaN
        value = np.where(top, np.where(man == 0, sign * np.inf, np.nan), value)
    else:  # E4M3 (FN): only S.1111.111 is NaN, the rest of the top binade is finite
        value = np.where(top & (man == (1 << man_bits) - 1), np.nan, value)
    return value.astype(np.float32)


_TABLES = {"F8_E4M3": _table(4, 3, ieee_specials=False), "F8_E5M2": _table(5, 2, ieee_specials=True)}


def fp8_to_float32(codes: np.ndarray, dtype: str) -> np.ndarray:
    """FP8 codes (uint8, any shape) of safetensors dtype ``dtype`` -> float32 values."""
    return _TABLES[dtype][codes]


def scale_kind(weight: tuple[int, int], scale: tuple[int, ...], block: tuple[int, int]) -> str | None:
    """How a scale tensor of shape ``scale`` covers an (out, in) weight: ``tensor`` (one value),
    ``row`` (one per output row), ``block`` (the ceil(out/bo) x ceil(in/bi) grid of ``block``),
    or None when it fits none of them."""
    size = int(np.prod(scale, dtype=np.int64))
    if size == 1:
        return "tensor"
    grid = (-(-weight[0] // block[0]), -(-weight[1] // block[1]))
    if tuple(scale) == grid:
        return "block"
    if tuple(scale) in ((weight[0],), (weight[0], 1)):
        return "row"
    return None


def dequantize(codes: np.ndarray, dtype: str, scale: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """(out, in) float32 weights from FP8 codes and a float32 scale that :func:`scale_kind` accepts.

    The product is float32, as DeepSeek-V3's ``weight_dequant`` computes it.
    """
    values = fp8_to_float32(codes, dtype)
    out, cols = values.shape
    kind = scale_kind((out, cols), scale.shape, block)
    if kind == "tensor":
        return values * scale.reshape(()).astype(np.float32)
    if kind == "row":
        return values * scale.reshape(out, 1).astype(np.float32)
    if kind != "block":
        raise ValueError(f"scale shape {scale.shape} does not cover weights {values.shape}")
    rows = np.repeat(scale.astype(np.float32), block[0], axis=0)[:out]  # (out, column blocks)
    if cols % block[1] == 0:  # in place, without a second full-size array
        values.reshape(out, -1, block[1])[...] *= rows[:, :, None]
        return values
    return values * np.repeat(rows, block[1], axis=1)[:, :cols]
