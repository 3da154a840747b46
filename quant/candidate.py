"""Candidates: an atom grid, a scale format, a block size and a scale rule, named as SOP does.

Grammar (case-insensitive; printed canonically so that ``parse(str(c)) == c``)::

    ATOM s SCALE [@BLOCK] [:OPTION]...

* ``ATOM``   an atom name (``E2M3``, ``NF4``, ``BOF4S``...; see :mod:`quant.formats`).
* ``SCALE``  a scale format (``UE4M4``, ``E4M3``, ``UE8M0``, ``FP32``...).
* ``BLOCK``  elements per block along the input dimension, default 16, or ``layer`` for one
  scale per tensor.
* ``OPTION`` overrides a default, printed only when it differs:
  - scale rule: ``nearest`` | ``ceil`` | ``floor`` | ``mse`` | ``4o6`` (see :class:`ScaleRule`);
  - sign: ``signed`` (signed absmax, BOF4-S eq. 4) | ``absmax``;
  - per-tensor factor: ``tfp32`` | ``tpot`` | ``tnone`` (see :class:`TensorScale`).

Examples: ``E2M3sUE4M4`` (E2M3 atoms, one UE4M4 scale per 16), ``E2M1sE4M3@16`` (NVFP4-like),
``E2M1sUE8M0@32`` (MXFP4), ``E4M3sUE8M0@layer`` (the per-layer power-of-two FP8 baseline).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from quant.errors import CandidateError, UnknownFormatError
from quant.formats import AtomFormat, get_atom
from quant.scales import ScaleFormat, get_scale

DEFAULT_BLOCK = 16  # SOP's default block size g = 16 (shared/docs/formats.md §2.3 [secondary])


class ScaleRule(enum.Enum):
    """How a block's real scale amax/qmax becomes a stored scale."""

    NEAREST = "nearest"
    """Round amax/(qmax*g) to the nearest scale value; the block max may clip (NVFP4 code)."""
    CEIL = "ceil"
    """Round up: no element clips. The per-layer POT baseline, S = 2**ceil(log2(A/qmax))."""
    FLOOR = "floor"
    """OCP MX shared exponent 2**(floor(log2 amax) - emax_elem) (OCP MX v1.0 §6.3; microxcaling)."""
    MSE = "mse"
    """Per block, the lowest-error of: nearest, ceil, x1.5 (4/6) and x0.9 scales."""
    FOUR_OVER_SIX = "4o6"
    """Per block, the lower-error of max->qmax and max->2/3 qmax (Four over Six, arXiv 2512.02010)."""


class TensorScale(enum.Enum):
    """A per-tensor factor g that places the block scales inside the scale format's range."""

    NONE = "tnone"
    """No factor (g = 1)."""
    FP32 = "tfp32"
    """g = amax_tensor / (qmax * scale_max), FP32 (NVFP4's two-level scaling)."""
    POT = "tpot"
    """g = 2**ceil(log2(amax_tensor / (qmax * scale_max))): a per-layer power-of-two shift."""


_RULES = {r.value: r for r in ScaleRule}
_TENSOR = {t.value: t for t in TensorScale}
_SIGN = {"signed": True, "absmax": False}


@dataclass(frozen=True)
class BitBreakdown:
    """Exact storage cost of one tensor under a candidate, part by part."""

    numel: int
    atom_bpw: float
    """Code bits per weight."""
    scale_bpw: float
    """Block-scale bits / block size."""
    sign_bpw: float
    """Extra sign bit per block when a signed scale rule uses an unsigned scale container."""
    tensor_bits: int
    """Per-tensor constants (tensor factor, or the single scale of an @layer candidate)."""

    @property
    def block_bpw(self) -> float:
        """Everything paid per weight or per block: the bpw of an infinitely large tensor."""
        return self.atom_bpw + self.scale_bpw + self.sign_bpw

    @property
    def bpw(self) -> float:
        """Total bits per weight for this tensor, per-tensor constants included."""
        return self.block_bpw + self.tensor_bits / self.numel

    @property
    def total_bits(self) -> float:
        return self.bpw * self.numel


@dataclass(frozen=True)
class Candidate:
    """One quantization format: what ``dse measure`` measures and ``dse explore`` assigns."""

    atom: AtomFormat
    scale: ScaleFormat
    block_size: int | None
    """Elements per block along the input dimension; None = one scale per tensor (@layer)."""
    rule: ScaleRule
    signed: bool
    """Signed absmax: the block's largest-magnitude weight maps to +top (BOF4-S eq. 4)."""
    tensor_scale: TensorScale

    @property
    def atoms(self) -> tuple[AtomFormat, ...]:
        """The grids a block may use (one; two for a dual pair)."""
        return (self.atom,)

    @classmethod
    def parse(cls, text: str) -> Candidate:
        return parse_candidate(text)

    @property
    def name(self) -> str:
        core = f"{self.atom.name}s{self.scale.name}"
        if self.block_size is None:
            core += "@layer"
        elif self.block_size != DEFAULT_BLOCK:
            core += f"@{self.block_size}"
        defaults = _defaults(self.atom, self.scale, self.block_size)
        opts = []
        if self.rule is not defaults.rule:
            opts.append(self.rule.value)
        if self.signed != defaults.signed:
            opts.append("signed" if self.signed else "absmax")
        if self.tensor_scale is not defaults.tensor_scale:
            opts.append(self.tensor_scale.value)
        return ":".join([core, *opts])

    def __str__(self) -> str:
        return self.name

    @property
    def target(self) -> float:
        """The grid value a block's extreme is mapped to (qmax, or +top when signed)."""
        return self.atom.top if self.signed else self.atom.qmax

    def bits(self, numel: int) -> BitBreakdown:
        """Exact bits for a tensor of ``numel`` weights."""
        if self.block_size is None:
            return BitBreakdown(numel, self.atom.code_bits, 0.0, 0.0, self.scale.bits)
        sign = 1.0 if self.signed and not self.scale.signed else 0.0
        tensor_bits = {TensorScale.NONE: 0, TensorScale.FP32: 32, TensorScale.POT: 8}[self.tensor_scale]
        return BitBreakdown(
            numel=numel,
            atom_bpw=self.atom.code_bits,
            scale_bpw=self.scale.bits / self.block_size,
            sign_bpw=sign / self.block_size,
            tensor_bits=tensor_bits,
        )

    @property
    def nominal_bpw(self) -> float:
        """Bits per weight without per-tensor constants (e.g. 6.5 for E2M3sUE4M4)."""
        return self.bits(1 << 62).block_bpw


@dataclass(frozen=True)
class _Defaults:
    rule: ScaleRule
    signed: bool
    tensor_scale: TensorScale


def _defaults(atom: AtomFormat, scale: ScaleFormat, block_size: int | None) -> _Defaults:
    if block_size is None:
        # One scale per tensor: round up so nothing clips (the SOP per-layer POT baseline).
        return _Defaults(ScaleRule.CEIL, atom.signed_scale, TensorScale.NONE)
    rule = ScaleRule.FLOOR if scale.power_of_two else ScaleRule.NEAREST
    tensor = TensorScale.NONE if scale.wide_range else TensorScale.FP32
    return _Defaults(rule, atom.signed_scale, tensor)


def parse_candidate(text: str) -> Candidate:
    """Parse a candidate name; raises UnknownFormatError / CandidateError with a one-line fix."""
    raw = text.strip()
    core, *options = raw.split(":")
    block: int | None = DEFAULT_BLOCK
    if "@" in core:
        core, block_text = core.rsplit("@", 1)
        if block_text.lower() == "layer":
            block = None
        elif block_text.isdigit() and int(block_text) > 0:
            block = int(block_text)
        else:
            raise CandidateError(f"candidate {raw!r}: block must be a positive integer or 'layer'")
    atom, scale = _split_atom_scale(raw, core, block)
    defaults = _defaults(atom, scale, block)
    rule, signed, tensor = defaults.rule, defaults.signed, defaults.tensor_scale
    for opt in (o.strip().lower() for o in options):
        if opt in _RULES:
            rule = _RULES[opt]
        elif opt in _SIGN:
            signed = _SIGN[opt]
        elif opt in _TENSOR:
            tensor = _TENSOR[opt]
        else:
            known = ", ".join([*_RULES, *_SIGN, *_TENSOR])
            raise CandidateError(f"candidate {raw!r}: unknown option {opt!r} (known: {known})")
    if block is None and tensor is not TensorScale.NONE:
        raise CandidateError(f"candidate {raw!r}: an @layer scale is already per tensor; drop :{tensor.value}")
    if tensor is not TensorScale.NONE and scale.wide_range:
        raise CandidateError(
            f"candidate {raw!r}: {scale.name} spans more range than any tensor needs; drop :{tensor.value}"
        )
    if block is None and rule in (ScaleRule.MSE, ScaleRule.FOUR_OVER_SIX):
        raise CandidateError(f"candidate {raw!r}: :{rule.value} searches per block; use a block size")
    return Candidate(atom, scale, block, rule, signed, tensor)


def _split_atom_scale(raw: str, core: str, block: int | None) -> tuple[AtomFormat, ScaleFormat]:
    """Split ``ATOMsSCALE`` at the 's' that leaves a valid atom and a valid scale.

    Atom and scale names may themselves contain 's' (BOF4S, S1E5M5), so every split is tried.
    """
    positions = [i for i, ch in enumerate(core) if ch in "sS"]
    if not positions:
        raise CandidateError(
            f"candidate {raw!r}: expected ATOMsSCALE[@BLOCK], e.g. E2M3sUE4M4 or NF4sFP32@64"
        )
    errors: list[UnknownFormatError] = []
    for i in positions:
        try:
            return resolve_atom(core[:i], block), get_scale(core[i + 1:])
        except UnknownFormatError as err:
            errors.append(err)
    raise UnknownFormatError(f"candidate {raw!r}: {errors[0]}")


def resolve_atom(name: str, block: int | None) -> AtomFormat:
    """The atom ``name``; ``BOF4S`` means the BOF4-S table fitted for this block size."""
    if name.strip().upper() != "BOF4S":
        return get_atom(name)
    size = 64 if block is None else block
    try:
        return get_atom(f"BOF4S{size}")
    except UnknownFormatError:
        raise CandidateError(
            f"BOF4-S has no table for block {size}; use BOF4S32/BOF4S64/BOF4S128/BOF4S256"
        ) from None
