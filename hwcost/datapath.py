"""The decode datapath of one candidate: fetch, buffer, LUT or direct decode, block scale, MAC.

Per weight and per token, at batch B, a weight stored in ``bpw`` bits costs (docs/hwcost.md §2f)::

    DRAM          bpw * pJ/bit                      / B   fetched once per decode step
    buffer        bpw * SRAM pJ/bit (buffer size)   / B   the packed stream read on chip
    LUT|decoder   one LUT read, or direct decode    / B   the decoded weight is reused B times
    block scale   one scale op per block dot product / block_size   (per token)
    MAC           one multiply-accumulate                           (per token)
    tensor scale  one op per output element          / in_features  (per token; needs the shape)

A fixed FP or INT atom can skip the LUT: it is decoded directly into its own sign, exponent and
significand, and the MAC multiplies that significand; through a LUT the MAC multiplies the LUT
word instead. :func:`decode_paths` lists both for such atoms so the difference shows.

The LUT word is the candidate's ``lut=FMT`` format when it names one, else the hardware's
``lut_output_bits`` word (quant measures such a candidate with exact float32 levels; name
``lut=FMT`` to measure the rounding to the LUT word as well).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from hwcost.errors import HardwareError
from hwcost.hardware import Hardware
from hwcost.logic import bit_slices, fp32_multiplier, int_adder, int_multiplier
from hwcost.lut import LutCost, LutImpl, lut_cost
from hwcost.part import NOTHING, Part
from hwcost.sram import sram_macro
from quant import AtomFormat, AtomKind, Candidate, ScaleFormat, TensorScale, get_atom, parse_candidate

_BUFFER_PORT_BITS = 64  # the packed stream is read in 64-bit words, the CACTI port width
_FP32_EXPONENT_BITS = 8


class DecodePath(enum.Enum):
    """How a code becomes the weight operand of the MAC."""

    DIRECT = "direct"
    """Fixed FP/INT codes wired into the MAC: hidden-bit detect, no table."""
    LUT = "lut"
    """Code (with any grid-select bit as its MSB) addresses a LUT of HIF words."""


def _fixed(atom: AtomFormat) -> bool:
    """Decodable without a table: an ExMy float or a symmetric integer grid."""
    return atom.kind in (AtomKind.FLOAT, AtomKind.INT)


def decode_paths(c: Candidate) -> tuple[DecodePath, ...]:
    """The ways ``c`` can be decoded, the default first: direct when every grid is fixed FP/INT."""
    if all(_fixed(a) for a in c.atoms):
        return (DecodePath.DIRECT, DecodePath.LUT)
    return (DecodePath.LUT,)


@dataclass(frozen=True)
class Operand:
    """The weight operand the MAC multiplies."""

    significand_bits: int
    """Bits into the multiplier array (hidden bit included; for an integer, its width)."""
    exponent_bits: int
    """0 for an integer/fixed-point operand: no exponent add, no alignment."""


@dataclass(frozen=True)
class EnergySplit:
    """Energy by component, in pJ (per weight, or per token: see where it is used)."""

    dram_pj: float
    buffer_pj: float
    lut_pj: float
    decoder_pj: float
    """Direct-decode logic (0 on the LUT path)."""
    scale_pj: float
    """Block-scale ops."""
    mac_pj: float
    tensor_scale_pj: float
    """Per-tensor scale or factor, once per output element (0 without a tensor shape)."""

    @property
    def total_pj(self) -> float:
        return float(sum(getattr(self, f.name) for f in fields(self)))

    def __add__(self, other: EnergySplit) -> EnergySplit:
        return EnergySplit(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def record(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


ZERO_ENERGY = EnergySplit(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class AreaItem:
    """``units`` copies of one hardware unit: a fixed charge, paid once however many tensors use it."""

    key: str
    """Names the unit and everything that sizes it: equal keys are the same hardware, same area."""
    units: int
    unit_area_um2: float

    @property
    def area_um2(self) -> float:
        return self.units * self.unit_area_um2


@dataclass(frozen=True)
class Datapath:
    """The units a candidate needs on some hardware, with energy per operation (batch-independent)."""

    candidate: Candidate
    decode: DecodePath
    operand: Operand
    dram_pj_per_bit: float
    buffer_pj_per_bit: float
    lut: LutCost | None
    decoder: Part
    """Direct decoder per decoded weight (NOTHING on the LUT path)."""
    block_scale: Part
    """One block-scale op (NOTHING for a per-tensor scale)."""
    tensor_scale: Part
    """One per-tensor op per output element (an @layer scale, or the tensor factor)."""
    mac: Part
    area: tuple[AreaItem, ...]
    uses: frozenset[str]
    """Every constant the numbers come from."""

    def energy(self, *, bits_per_step: float, weights_per_step: float, macs: float, outputs: float,
               batch: int) -> EnergySplit:
        """Energy per token of fetching/decoding weights once per step and using them in ``macs`` MACs."""
        decoded = weights_per_step / batch
        block = self.candidate.block_size
        return EnergySplit(
            dram_pj=bits_per_step * self.dram_pj_per_bit / batch,
            buffer_pj=bits_per_step * self.buffer_pj_per_bit / batch,
            lut_pj=decoded * self.lut.unit.energy_pj if self.lut else 0.0,
            decoder_pj=decoded * self.decoder.energy_pj,
            scale_pj=macs * self.block_scale.energy_pj / block if block else 0.0,
            mac_pj=macs * self.mac.energy_pj,
            tensor_scale_pj=outputs * self.tensor_scale.energy_pj,
        )


@dataclass(frozen=True)
class CandidateCost:
    """Cost of one candidate per weight of a large dense tensor, and its decode hardware."""

    candidate: str
    decode: DecodePath
    bpw: float
    """Bits per weight of a large tensor (:func:`nominal_bpw`): no per-tensor constants."""
    lut_bits: int
    lut_impl: LutImpl | None
    energy_pj_per_weight: EnergySplit
    """Per weight per token at the hardware's batch."""
    area: tuple[AreaItem, ...]
    uses: frozenset[str]

    @property
    def decode_area_mm2(self) -> float:
        return sum(item.area_um2 for item in self.area) * 1e-6

    def record(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "candidate": self.candidate,
            "decode": self.decode.value,
            "bpw": self.bpw,
            "energy_pj_per_weight": self.energy_pj_per_weight.total_pj,
            "energy_split_pj_per_weight": self.energy_pj_per_weight.record(),
            "decode_area_mm2": self.decode_area_mm2,
            "area_um2": {item.key: item.area_um2 for item in self.area},
            "lut_bits": self.lut_bits,
            "lut_impl": self.lut_impl.value if self.lut_impl else None,
        }


def _check_path(c: Candidate, decode: DecodePath | None) -> DecodePath:
    paths = decode_paths(c)
    if decode is None:
        return paths[0]
    if decode not in paths:
        lut_only = ", ".join(a.name for a in c.atoms if not _fixed(a))
        raise HardwareError(f"candidate {c.name}: {lut_only} has no fixed encoding to decode directly; "
                            "use decode 'lut'")
    return decode


def _direct_operand(atom: AtomFormat) -> Operand:
    if atom.float_spec is not None:
        return Operand(atom.float_spec.mantissa_bits + 1, atom.float_spec.exponent_bits)
    return Operand(atom.code_bits, 0)  # INT: two's complement straight into the multiplier


def lut_word_format(hw: Hardware) -> AtomFormat | None:
    """The value set of the hardware's LUT words: ``hw.lut_format``, else an ExMy stand-in of width
    ``lut_output_bits`` (E1M1, E2M1, E2M2, E2M3, E3M3, E4M3 for 3..8 bits, up to E5M10 for 16), or
    None for words wider than 16 bits (taken as exact float32 levels)."""
    if hw.lut_format:
        return get_atom(hw.lut_format)
    bits = hw.lut_output_bits
    if bits > 16 or bits < 3:
        return None
    exponent = 1 if bits == 3 else min(max(2, bits - 4), 5)
    return get_atom(f"E{exponent}M{bits - 1 - exponent}")


def with_hardware_lut(c: Candidate, hw: Hardware) -> Candidate:
    """``c`` with the hardware's LUT word format as its ``lut=`` when it decodes a codebook or
    learned grid through the LUT and names no format itself, so that the measured error, the bpw
    (LUT image bits) and the LUT cost all use the same word."""
    fmt = lut_word_format(hw)
    if fmt is None or c.lut_format is not None or all(_fixed(a) for a in c.atoms):
        return c
    return parse_candidate(dataclasses.replace(c, lut_format=fmt).name)


def lut_word_bits(c: Candidate, hw: Hardware) -> int:
    """Width of one LUT entry: the candidate's ``lut=FMT``, else the hardware's LUT word."""
    return c.lut_format.code_bits if c.lut_format is not None else hw.lut_output_bits


def weight_operand(c: Candidate, hw: Hardware, decode: DecodePath) -> Operand:
    """What the MAC multiplies: the LUT word, or the widest directly decoded grid."""
    if decode is DecodePath.LUT:
        if c.lut_format is not None and _fixed(c.lut_format):
            return _direct_operand(c.lut_format)
        width = lut_word_bits(c, hw)  # a user value set (HIF stand-in): its encoding is unknown
        return Operand(width - hw.lut_output_exponent_bits, hw.lut_output_exponent_bits)
    operands = [_direct_operand(a) for a in c.atoms]
    return Operand(max(o.significand_bits for o in operands), max(o.exponent_bits for o in operands))


def _direct_decoder(c: Candidate, operand: Operand, hw: Hardware) -> Part:
    """Hidden-bit detect per FP grid (an OR over the exponent bits) plus a grid-select mux for a pair.

    Subnormal exponent fix-up and the select mux are counted as one bit slice per bit [inference].
    """
    detect = sum((bit_slices(a.float_spec.exponent_bits, hw.tech) for a in c.atoms if a.float_spec), NOTHING)
    word_bits = 1 + operand.exponent_bits + operand.significand_bits
    return detect + bit_slices((len(c.atoms) - 1) * word_bits, hw.tech)


def _mac(operand: Operand, hw: Hardware) -> Part:
    """Multiplier array + accumulator; for FP operands also an exponent add and an alignment shifter.

    The shifter is a barrel shifter over the accumulator: acc * ceil(log2 acc) mux slices
    [inference; Horowitz's FP multipliers cost ~1-2x their significand array, docs/hwcost.md §2f item 6].
    """
    unit = int_multiplier(operand.significand_bits, hw.activation_significand_bits, hw.tech)
    unit += int_adder(hw.accumulator_bits, hw.tech)
    exponent_bits = max(operand.exponent_bits, hw.activation_exponent_bits)
    if exponent_bits:
        unit += int_adder(exponent_bits, hw.tech)
        unit += bit_slices(hw.accumulator_bits * math.ceil(math.log2(hw.accumulator_bits)), hw.tech)
    return unit


def _scale_unit(scale: ScaleFormat, operand: Operand, hw: Hardware) -> tuple[str, Part]:
    """Applying one scale, and a key naming what sizes it. A power of two is an exponent add;
    otherwise a significand x operand multiplier plus the exponent add (docs/hwcost.md §2f item 5)."""
    exponent = int_adder(scale.exponent_bits, hw.tech)
    if scale.power_of_two:
        return scale.name, exponent
    multiplier = int_multiplier(scale.significand_bits, operand.significand_bits, hw.tech)
    return f"{scale.name}*s{operand.significand_bits}", multiplier + exponent


def _grid_factor(c: Candidate, decode: DecodePath, operand: Operand, hw: Hardware) -> tuple[str, Part]:
    """A directly decoded second grid rescaled by a factor that is not a power of two (IF4's INT4
    x 6/7) gets it applied per scale op: one more multiplier, the factor held to the operand's
    significand width [inference]. Through a LUT the factor is in the stored levels, free."""
    factors = [c.grid_factor(i) for i in range(len(c.atoms))]
    if decode is DecodePath.LUT or all(math.log2(f).is_integer() for f in factors):
        return "", NOTHING
    bits = operand.significand_bits
    return "+factor", int_multiplier(bits, bits, hw.tech)


def _tensor_factor(tensor_scale: TensorScale, hw: Hardware) -> tuple[str, Part]:
    """The per-tensor factor on the output: an FP32 multiply, or a power-of-two exponent add."""
    if tensor_scale is TensorScale.FP32:
        return "fp32", fp32_multiplier(hw.tech)
    if tensor_scale is TensorScale.POT:
        return f"exp{_FP32_EXPONENT_BITS}", int_adder(_FP32_EXPONENT_BITS, hw.tech)
    return "", NOTHING


@lru_cache(maxsize=1024)  # the ILP asks for the same (candidate, hardware) once per tensor
def datapath(c: Candidate, hw: Hardware, decode: DecodePath | None = None) -> Datapath:
    """The units ``c`` needs on ``hw`` (``decode`` None: the default path of :func:`decode_paths`)."""
    path = _check_path(c, decode)
    operand = weight_operand(c, hw, path)
    mac = _mac(operand, hw)
    exponent_bits = max(operand.exponent_bits, hw.activation_exponent_bits)
    area = [AreaItem(f"mac_array:s{operand.significand_bits}e{exponent_bits}", hw.lanes, mac.area_um2)]
    lut = None
    decoder = NOTHING
    if path is DecodePath.LUT:
        # the grid-select bit of a pair is the LUT address MSB: both tables in one LUT
        entries = sum(1 << a.code_bits for a in c.atoms)
        width = lut_word_bits(c, hw)
        lut = lut_cost(entries, width, hw.lut_ports, hw.lut_min_sram_bits, hw.tech)
        area.append(AreaItem(f"lut:{entries}x{width}b", 1, lut.unit.area_um2))
    else:
        decoder = _direct_decoder(c, operand, hw)
        if decoder.area_um2:
            area.append(AreaItem("decoder:" + "+".join(a.name for a in c.atoms), hw.lut_ports, decoder.area_um2))
    scale_key, scale = _scale_unit(c.scale, operand, hw)
    factor_key, factor = _grid_factor(c, path, operand, hw)
    scale, scale_key = scale + factor, scale_key + factor_key
    block_scale = tensor_scale = NOTHING
    if c.block_size is None:
        tensor_scale, tensor_key = scale, scale_key
    else:
        block_scale = scale
        # one scale op per block dot product: lanes / block_size of them per cycle
        area.append(AreaItem(f"block_scale:{scale_key}/{c.block_size}", -(-hw.lanes // c.block_size),
                             scale.area_um2))
        tensor_key, tensor_scale = _tensor_factor(c.tensor_scale, hw)
    if tensor_scale is not NOTHING:
        area.append(AreaItem(f"tensor_scale:{tensor_key}", 1, tensor_scale.area_um2))
    buffer = sram_macro(hw.buffer_kib * 8192, _BUFFER_PORT_BITS, hw.tech)
    parts = (buffer, lut.unit if lut else NOTHING, decoder, block_scale, tensor_scale, mac)
    return Datapath(
        candidate=c, decode=path, operand=operand,
        dram_pj_per_bit=hw.memory.energy_pj_per_bit,
        buffer_pj_per_bit=buffer.energy_pj / _BUFFER_PORT_BITS,
        lut=lut, decoder=decoder, block_scale=block_scale, tensor_scale=tensor_scale, mac=mac,
        area=tuple(area), uses=frozenset().union(*(p.uses for p in parts)),
    )


def nominal_bpw(c: Candidate) -> float:
    """Bits per weight of a large tensor: ``c.nominal_bpw`` plus the residual entries, whose count
    is a fixed fraction. Outliers depend on the weights and are left out (pass them to tensor_cost)."""
    if c.residual is None:
        return c.nominal_bpw
    return c.nominal_bpw + c.residual.fraction * c.residual.entry_bits(c.block_size or 1 << 16)


def candidate_cost(c: Candidate, hw: Hardware, decode: DecodePath | None = None) -> CandidateCost:
    """Per-weight energy (per token, at ``hw.batch``) and decode area of ``c`` on ``hw``.

    The weight is one of a large dense tensor: per-tensor constants and the per-output tensor
    scale vanish (:func:`hwcost.model.tensor_cost` counts them for a real tensor). Stored-aside
    entries (outliers, residuals) are fetched like weights; the datapath that adds them back is
    not modelled.
    """
    dp = datapath(c, hw, decode)
    bpw = nominal_bpw(c)
    energy = dp.energy(bits_per_step=bpw, weights_per_step=1.0, macs=1.0, outputs=0.0, batch=hw.batch)
    return CandidateCost(
        candidate=c.name, decode=dp.decode, bpw=bpw,
        lut_bits=dp.lut.bits if dp.lut else 0, lut_impl=dp.lut.impl if dp.lut else None,
        energy_pj_per_weight=energy, area=dp.area, uses=dp.uses,
    )
