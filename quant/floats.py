"""Enumerate the exact values of ExMy floating-point encodings, code by code.

Used for atom grids (E2M1, E2M3, E4M3, ...) and scale grids (UE8M0, UE4M4, ...). Values are
computed with ``math.ldexp`` and are exact; every format here fits in float32.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Specials(enum.Enum):
    """Which codes are not finite numbers."""

    NONE = "finite"
    """Every code is a number (OCP MX FP4/FP6 elements, OCP MX v1.0 §5.3)."""
    FN = "fn"
    """Only the all-ones code S.1111.111 is NaN (OCP OFP8 E4M3, max 448)."""
    IEEE = "ieee"
    """Top exponent holds Inf and NaNs (OCP OFP8 E5M2, IEEE 754)."""
    E8M0 = "e8m0"
    """OCP MX UE8M0 scale: 2**(e-127), no zero, 0xFF is NaN (OCP MX v1.0 §5.4)."""


@dataclass(frozen=True, slots=True)
class FloatSpec:
    """A binary floating-point encoding ExMy with optional sign bit."""

    exponent_bits: int
    mantissa_bits: int
    bias: int
    signed: bool = True
    specials: Specials = Specials.NONE

    @property
    def bits(self) -> int:
        return int(self.signed) + self.exponent_bits + self.mantissa_bits

    @property
    def emax(self) -> int:
        """Exponent of the largest finite binade (used by the OCP MX shared-exponent rule)."""
        return math.floor(math.log2(max(v for v, _ in self.decode_all())))

    def decode(self, code: int) -> float:
        """The value of one code (NaN for NaN codes, +-inf for infinities)."""
        e, m = self.exponent_bits, self.mantissa_bits
        sign = -1.0 if self.signed and (code >> (e + m)) & 1 else 1.0
        exp_field = (code >> m) & ((1 << e) - 1)
        man = code & ((1 << m) - 1)
        top = (1 << e) - 1
        if self.specials is Specials.E8M0:
            return math.nan if exp_field == top else math.ldexp(1.0, exp_field - self.bias)
        if self.specials is Specials.FN and exp_field == top and man == (1 << m) - 1:
            return math.nan
        if self.specials is Specials.IEEE and exp_field == top:
            return sign * math.inf if man == 0 else math.nan
        if exp_field == 0:  # subnormal: no implicit leading one
            return sign * math.ldexp(man, 1 - self.bias - m)
        return sign * math.ldexp((1 << m) + man, exp_field - self.bias - m)

    def decode_all(self) -> list[tuple[float, int]]:
        """(value, code) for every finite code; -0 is dropped in favour of +0."""
        out: dict[float, int] = {}
        for code in range(1 << self.bits):
            value = self.decode(code)
            if math.isfinite(value) and value not in out:  # -0.0 == 0.0: keeps code 0
                out[value] = code
        return sorted(out.items())


def ieee_bias(exponent_bits: int) -> int:
    """The IEEE-style bias 2**(e-1) - 1 (E2: 1, E3: 3, E4: 7, E5: 15, E8: 127)."""
    return (1 << (exponent_bits - 1)) - 1
