"""Candidates as a scenario's hardware runs them.

* Every candidate that decodes a codebook or learned grid through the LUT and names no ``lut=``
  format gets the hardware's LUT word format (``hardware.fields.lut_format``, or the ExMy
  stand-in of ``lut_output_bits``), so that its measured error, its bpw (LUT image bits) and its
  LUT cost all describe the same word.
* ``hardware.lut_sram_bits_per_layer`` is a constraint: a candidate whose LUT (all its grids x
  levels x word width) does not fit a layer's LUT SRAM is excluded, and the exclusion reported.
  Every layer has the same capacity, so a candidate fits every layer or none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hwcost import Hardware, datapath
from hwcost.datapath import with_hardware_lut
from quant import Candidate


@dataclass(frozen=True)
class Fitted:
    """The candidates to measure, and those excluded with the reason."""

    candidates: tuple[Candidate, ...]
    excluded: tuple[str, ...]
    """One line per excluded candidate: ``NAME: needs N bits of LUT SRAM per layer > CAP``."""


def lut_sram_bits(c: Candidate, hw: Hardware) -> int:
    """LUT SRAM a layer decoded with ``c`` needs: entries of all its grids x LUT word bits (0 when
    every grid is decoded directly)."""
    lut = datapath(c, hw).lut
    return lut.bits if lut is not None else 0


def fit_to_hardware(candidates: Sequence[Candidate], hw: Hardware, lut_sram_bits_per_layer: int | None) -> Fitted:
    """Apply the hardware's LUT word format, then drop what does not fit the LUT SRAM (order kept,
    duplicates that the rewrite creates merged)."""
    kept: dict[str, Candidate] = {}
    excluded = []
    for original in candidates:
        c = with_hardware_lut(original, hw)
        need = lut_sram_bits(c, hw)
        if lut_sram_bits_per_layer is not None and need > lut_sram_bits_per_layer:
            excluded.append(f"{c.name}: needs {need} bits of LUT SRAM per layer > {lut_sram_bits_per_layer}")
        else:
            kept.setdefault(c.name, c)
    return Fitted(tuple(kept.values()), tuple(excluded))
