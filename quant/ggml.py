"""llama.cpp's legacy block quantizers Q4_0, Q5_0 and Q8_0, reproduced bit for bit.

ggml computes codes with the unrounded float32 scale ``d`` (through its reciprocal) and only
then stores ``d`` as FP16, so these formats are not the generic "round the scale, then round
onto the grid" of :mod:`quant.engine`. The compiled kernel follows the reference quantizers
(ggml-quants.c ``quantize_row_q{4,5,8}_0_ref``, mirrored in numpy by the ``gguf`` package's
``gguf.quants``) operation for operation in float32; a test checks codes, scales and
reconstructions against ``gguf.quants`` bit for bit.

Blocks are the engine's (B, n_blocks) layout: axis 0 runs along one block of B weights.
"""

from __future__ import annotations

import numpy as np

from quant import kernels
from quant.candidate import Candidate
from quant.metrics import NO_PARTS


def quantize_blocks(blocks: np.ndarray, c: Candidate, parts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w_hat, codes, scales) of a (B, n_blocks) float32 chunk under a ``:ggml`` candidate
    (quant.kernels.ggml_blocks), filling ``parts`` (quant.metrics.stats_parts) if given.

    ``codes`` index the candidate's sorted grid (for Q4/Q5 they equal ggml's stored nibbles);
    ``scales`` are the FP16-rounded block scales as float32 (signed for Q4_0/Q5_0).
    """
    half = int(-c.atom.values[0]) if c.signed else 0  # Q4_0 / Q5_0: the extreme maps to -half
    w_hat, codes = np.empty(blocks.shape, np.float32), np.empty(blocks.shape, np.uint16)
    scales = np.empty(blocks.shape[1], np.float32)
    kernels.ggml_blocks(blocks, half, int(c.atom.values[-1]), w_hat, codes, scales, *(parts or NO_PARTS))
    return w_hat, codes, scales

