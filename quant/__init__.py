"""quant: exact value grids, bit accounting and fast block quantization of weight matrices.

The public API, usable from a notebook::

    import numpy as np
    from quant import parse_candidate, measure
    c = parse_candidate("E2M3sUE4M4")
    stats = measure(np.random.default_rng(0).standard_normal((1024, 1024)), c)
    stats.rel_mse, c.bits(1024 * 1024).bpw
"""

from quant.candidate import BitBreakdown, Candidate, ScaleRule, TensorScale, parse_candidate
from quant.errors import DseError
from quant.formats import ATOMS, AtomFormat, AtomKind, get_atom, register_codebook
from quant.metrics import ErrorStats
from quant.engine import (FittedGrids, QuantizedTensor, dequantize, fit_grids, measure, quantize,
                          reconstruction_error)
from quant.scales import ScaleFormat, get_scale

__all__ = [
    "ATOMS", "AtomFormat", "AtomKind", "BitBreakdown", "Candidate", "DseError", "ErrorStats", "FittedGrids",
    "QuantizedTensor", "ScaleFormat", "ScaleRule", "TensorScale", "dequantize", "fit_grids", "get_atom",
    "get_scale", "measure", "parse_candidate", "quantize", "reconstruction_error", "register_codebook",
]
