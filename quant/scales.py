"""Block-scale formats: the grid a per-block (or per-tensor) scale is rounded onto.

Names (case-insensitive):

* ``UExMy``  unsigned, IEEE-style bias 2**(x-1)-1, subnormals, every code finite. UE4M4 this
  way has max 496 and min subnormal 2**-10. The SOP paper gives no bias: this is an assumption
  (docs/packed-format.md §4, "Scale containers"); with SOP's per-layer power-of-two shift the bias only
  moves the 16-binade window, so range width and mantissa precision are what it decides.
* ``UE8M0``  the OCP MX power-of-two scale 2**(e-127), no zero, 0xFF = NaN (OCP MX v1.0 §5.4).
* ``ExMy``   signed: a sign bit plus ExMy magnitudes (E4M3 is the OFP8 "fn" encoding, max 448).
* ``S1ExMy`` a signed ExMy in a container with one spare metabit (SOP's 12-bit S1E5M5).
* ``FP32``   unquantized float32 scale (the reference "fp32-scale" rows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from quant.errors import UnknownFormatError, brief
from quant.floats import FloatSpec, Specials, ieee_bias
from quant.formats import _unknown_message
from quant.lookup import LookupTable, Rounding, lookup_table


@dataclass(frozen=True)
class ScaleFormat:
    """A scale encoding: its positive magnitudes, container width and spare bits."""

    name: str
    bits: int
    """Container width per stored scale, including any sign or metabit."""
    signed: bool
    """Has a sign bit: free for signed-absmax scales, or as a grid-selection bit."""
    metabit: bool
    """Has one spare bit beyond sign and magnitude (S1E5M5 12-bit container)."""
    float_spec: FloatSpec | None
    """Encoding of the magnitude; None for an unquantized FP32 scale."""
    source: str

    @property
    def exact(self) -> bool:
        """True for FP32: the scale is not rounded."""
        return self.float_spec is None

    @property
    def significand_bits(self) -> int:
        """Mantissa bits + the implicit one: sizes the scale multiplier (24 for FP32)."""
        return 24 if self.float_spec is None else self.float_spec.mantissa_bits + 1

    @property
    def exponent_bits(self) -> int:
        return 8 if self.float_spec is None else self.float_spec.exponent_bits

    @property
    def power_of_two(self) -> bool:
        """Every value is 2**k: the scale multiply is an exponent add."""
        return self.float_spec is not None and self.float_spec.mantissa_bits == 0

    @cached_property
    def magnitudes(self) -> np.ndarray:
        """Sorted non-negative representable scale magnitudes (float64, each a float32)."""
        if self.float_spec is None:
            return np.array([0.0, float(np.finfo(np.float32).max)])
        return np.array([v for v, _ in self.float_spec.decode_all() if v >= 0.0])

    @property
    def max(self) -> float:
        return float(self.magnitudes[-1])

    @property
    def min_positive(self) -> float:
        return float(self.magnitudes[self.magnitudes > 0][0])

    @property
    def wide_range(self) -> bool:
        """Spans more than 2**64: no per-tensor factor is needed to place block scales."""
        return self.exact or self.max / self.min_positive > 2.0**64

    def table(self, rounding: Rounding) -> LookupTable | None:
        """The table rounding positive float32 ideal scales onto this format under ``rounding``
        (saturating at max); None for FP32 scales, which are not rounded."""
        if self.float_spec is None:
            return None
        table = self._tables.get(rounding)
        if table is None:
            # A non-negative ExMy's code is its magnitude index: the tie rule is RNE on the code.
            table = self._tables[rounding] = lookup_table(self.magnitudes, rounding)
        return table

    @cached_property
    def _tables(self) -> dict[Rounding, LookupTable]:
        """Per-instance memo (hashing a format per call costs more than the lookup)."""
        return {}


_UNSIGNED = re.compile(r"UE(\d+)M(\d+)", re.ASCII)
_SIGNED = re.compile(r"E(\d+)M(\d+)", re.ASCII)
_META = re.compile(r"S1E(\d+)M(\d+)", re.ASCII)

BUILTIN_SCALES = ("UE8M0", "UE4M4", "UE4M3", "UE5M3", "UE3M5", "UE5M7", "E4M3", "S1E5M5", "E8M7", "FP16", "FP32")


def get_scale(name: str) -> ScaleFormat:
    """The scale format called ``name`` (case-insensitive)."""
    return _scale_by_key(name.strip().upper(), name)


@cache
def _scale_by_key(key: str, name: str) -> ScaleFormat:
    if key == "FP32":
        return ScaleFormat("FP32", 32, True, False, None, "unquantized IEEE float32 scale")
    if key == "FP16":
        return ScaleFormat("FP16", 16, True, False, FloatSpec(5, 10, 15, signed=False, specials=Specials.IEEE),
                           "IEEE 754 binary16, llama.cpp's ggml_half block scale")
    for pattern, signed, meta in ((_UNSIGNED, False, False), (_META, True, True), (_SIGNED, True, False)):
        if match := pattern.fullmatch(key):
            e, m = int(match[1]), int(match[2])
            if not (1 <= e <= 8 and 0 <= m <= 10):
                raise UnknownFormatError(f"scale format {brief(name)}: need 1<=E<=8 and 0<=M<=10")
            return _make_scale(key, e, m, signed, meta)
    raise UnknownFormatError(
        _unknown_message("scale format", name, list(BUILTIN_SCALES), "any UExMy / ExMy / S1ExMy")
    )


def _make_scale(key: str, e: int, m: int, signed: bool, meta: bool) -> ScaleFormat:
    if key == "UE8M0":
        spec = FloatSpec(8, 0, 127, signed=False, specials=Specials.E8M0)
        source = "OCP MX v1.0 §5.4 E8M0: 2**(e-127), no zero, 0xFF NaN"
    else:
        specials = Specials.NONE
        if signed and (e, m) == (4, 3):
            specials = Specials.FN  # the OFP8 E4M3 encoding NVFP4 stores its block scales in
        elif e == 8 or (signed and (e, m) == (5, 2)):
            specials = Specials.IEEE  # E5M2 as OFP8; E8My as BF16-like (top exponent Inf/NaN)
        spec = FloatSpec(e, m, ieee_bias(e), signed=False, specials=specials)
        source = (
            f"{'signed' if signed else 'unsigned'} E{e}M{m}, bias {ieee_bias(e)}, subnormals"
            + (", S.1111.111 NaN (OFP8 E4M3, NVFP4 block scale)" if specials is Specials.FN else "")
            + ("; assumed all codes finite (no published bias: docs/packed-format.md)" if not signed else "")
            + ("; 12-bit container with a spare metabit (SOP S1E5M5 [secondary])" if meta else "")
        )
    bits = e + m + int(signed) + int(meta)
    return ScaleFormat(key, bits, signed, meta, spec, source)
