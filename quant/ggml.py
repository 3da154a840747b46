"""llama.cpp's legacy block quantizers Q4_0, Q5_0 and Q8_0, reproduced bit for bit.

ggml computes codes with the unrounded float32 scale ``d`` (through its reciprocal) and only
then stores ``d`` as FP16, so these formats are not the generic "round the scale, then round
onto the grid" of :mod:`quant.engine`. The arithmetic below follows the reference quantizers
(ggml-quants.c ``quantize_row_q{4,5,8}_0_ref``, mirrored in numpy by the ``gguf`` package's
``gguf.quants``) operation for operation in float32; a test checks codes, scales and
reconstructions against ``gguf.quants`` bit for bit.

Blocks are the engine's (B, n_blocks) layout: axis 0 runs along one block of B weights.
"""

from __future__ import annotations

import numpy as np

from quant.candidate import Candidate


def quantize_blocks(blocks: np.ndarray, c: Candidate) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w_hat, codes, scales) of a (B, n_blocks) float32 chunk under a ``:ggml`` candidate.

    ``codes`` index the candidate's sorted grid (for Q4/Q5 they equal ggml's stored nibbles);
    ``scales`` are the FP16-rounded block scales as float32 (signed for Q4_0/Q5_0).
    """
    with np.errstate(divide="ignore"):
        if c.signed:  # Q4_0 / Q5_0: the largest-magnitude weight maps to -2**(bits-1)
            half = -c.atom.values[0]
            imax = np.abs(blocks).argmax(axis=0)
            extreme = np.take_along_axis(blocks, imax[None, :], axis=0)[0]
            d = extreme / np.float32(-half)
            inv = np.where(d == 0, np.float32(0.0), np.float32(1.0) / d)
            t = np.trunc(blocks * inv + np.float32(half + 0.5))
            codes = np.clip(t, 0, 2 * half - 1).astype(np.uint16)
            q = codes.astype(np.float32) - np.float32(half)
        else:  # Q8_0: absmax -> 127, round half away from zero
            top = c.atom.values[-1]
            d = np.abs(blocks).max(axis=0) / np.float32(top)
            inv = np.where(d == 0, np.float32(0.0), np.float32(1.0) / d)
            x = blocks * inv
            a = np.abs(x)
            floored = np.floor(a)
            q = np.sign(x) * (floored + np.floor(np.float32(2.0) * (a - floored)))
            codes = (q + np.float32(top)).astype(np.uint16)
    scales = d.astype(np.float16).astype(np.float32)
    return q * scales, codes, scales
