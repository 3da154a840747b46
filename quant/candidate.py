"""Candidates: grids, a scale format, a block size, a scale rule and corrections, named as SOP does.

Grammar (case-insensitive; printed canonically so that ``parse(str(c)) == c``)::

    ATOM[|ATOM]... s SCALE [@BLOCK] [:OPTION]... [+CORRECTION]...

* ``ATOM``   an atom name (``E2M3``, ``NF4``, ``BOF4S``, ``DD4``, a shifted grid ``E2M1~0.5``...;
  see :mod:`quant.formats`), or a grid-set name (``SFP4``). Several atoms ``A|B|...`` make a grid
  set (Grid Games' PO2/MPO2/SFP4): each block keeps the grid with the lower error and stores its
  choice in ceil(log2 n) selection bits; grid k is rescaled so that its extreme equals A's (IF4's
  INT4 x 6/7 when paired with E2M1), except that a shifted grid keeps its base's scale.
* ``SCALE``  a scale format (``UE4M4``, ``E4M3``, ``UE8M0``, ``S1E5M5``, ``FP32``...).
* ``BLOCK``  elements per block along the input dimension, default 16, or ``layer``.
* ``OPTION`` overrides a default and is printed only when it differs:
  - scale rule: ``nearest`` | ``ceil`` | ``floor`` | ``mse`` | ``4o6`` (see :class:`ScaleRule`);
  - sign: ``signed`` (signed absmax, BOF4-S eq. 4) | ``absmax``;
  - per-tensor factor: ``tfp32`` | ``tpot`` | ``tnone`` (see :class:`TensorScale`);
  - selection bits of a grid set: ``selbit`` | ``selsign`` | ``selmeta`` (see :class:`Selection`);
  - ``aw``: activation-weighted choices (grid selection, DD4 fit, residual selection);
  - ``lut=FMT``: codebook levels are stored in the LUT in atom format FMT (E4M3, E5M2, or a
    registered user value set standing in for SOP's HIF): placed in FMT's range by a per-grid
    power of two, then rounded (see :func:`quant.lutformat.store_levels`).
* ``CORRECTION``:
  - ``opq(Q[,BITS])``: outliers beyond the Gaussian block-maximum quantile Q, kept aside;
  - ``res(P%[,BITS])``: the P % largest (activation-weighted) residuals, stored exactly;
  BITS per entry: value + index, default 16 + 16 = 32 (SpQR), or ``blockidx`` for 16 + log2(block).

Examples: ``E2M3sUE4M4``, ``E2M1sE4M3@16`` (NVFP4-like), ``E2M1sUE8M0@32`` (MXFP4),
``E4M3sUE8M0@layer`` (per-layer POT FP8), ``E2M1|INT4sE4M3`` (IF4-like), ``NF4|DD4sUE4M4:aw``,
``E2M1sE4M3@16+opq(0.95)``, ``NF4|DD4sUE4M4+res(0.5%)``.
"""

from __future__ import annotations

import enum
import functools
import math
import re
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import cast

from quant import aliases
from quant.errors import CandidateError, UnknownFormatError, brief
from quant.formats import GRID_SETS, AtomFormat, AtomKind, get_atom, get_grid_set
from quant.scales import ScaleFormat, get_scale

DEFAULT_BLOCK = 16  # SOP's default block size g = 16 (docs/formats.md §2.3 [secondary])
SPARSE_VALUE_BITS = 16  # an outlier/residual value is stored as BF16
SPARSE_INDEX_BITS = 16  # and its position as a 16-bit index (SpQR main.py: 32 bits per outlier)
MAX_GRIDS = 16  # grids per set: 4 selection bits at most
LUT_EXPONENT_BITS = 8  # power-of-two exponent of a lut=FMT image, stored as a UE8M0 byte


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
    GGML = "ggml"
    """llama.cpp's reference rule (Q4_0, Q5_0, Q8_0): codes from the unrounded scale, then the
    scale stored as FP16 (see :mod:`quant.ggml`)."""


class TensorScale(enum.Enum):
    """A per-tensor factor g that places the block scales inside the scale format's range."""

    NONE = "tnone"
    """No factor (g = 1)."""
    FP32 = "tfp32"
    """g = amax_tensor / (qmax * scale_max), FP32 (NVFP4's two-level scaling)."""
    POT = "tpot"
    """g = 2**ceil(log2(amax_tensor / (qmax * scale_max))): a per-layer power-of-two shift."""


class Selection(enum.Enum):
    """Where a grid set's per-block selection (ceil(log2 n) bits for n grids) is stored."""

    BIT = "selbit"
    """Every selection bit stored apart (+ceil(log2 n)/block bpw)."""
    SIGN = "selsign"
    """The lowest selection bit in the unused sign bit of a signed scale (IF4, MixFP4), the rest
    apart; needs a grid set that is its own mirror image (symmetric grids, or shifts by +-c)."""
    META = "selmeta"
    """The lowest selection bit in the spare metabit of an S1E5M5 scale (SOP [secondary]), the rest apart."""


@dataclass(frozen=True)
class Outliers:
    """OPQ outliers (BOF4 §3.3): |w| > sigma_block * F_M^-1(quantile) kept aside, stored exactly."""

    quantile: float
    bits_per_entry: float | None = None
    """None = in-block index: 16 value bits + log2(block) index bits."""

    def entry_bits(self, block: int) -> float:
        return _entry_bits(self.bits_per_entry, block)

    def threshold_sigmas(self, block: int) -> float:
        """F_M^-1(q): quantile of max |X| over ``block`` i.i.d. N(0,1), from (2 Phi(m) - 1)**B = q.

        BOF4 §3.3 says "the Gaussian block maximum"; taking |X| is our reading [inference].
        """
        from scipy.stats import norm

        return float(norm.ppf((1.0 + self.quantile ** (1.0 / block)) / 2.0))


@dataclass(frozen=True)
class Residual:
    """SOP "Wr": the largest (activation-weighted) residuals, a fraction of the tensor, stored exactly."""

    fraction: float
    bits_per_entry: float | None = None

    def entries(self, numel: int) -> int:
        """How many entries the residual selects in a tensor of ``numel`` weights (at most; an entry
        whose BF16 value is no closer than its quantized one is not stored)."""
        return max(1, round(self.fraction * numel))

    def entry_bits(self, block: int) -> float:
        return _entry_bits(self.bits_per_entry, block)


def _entry_bits(bits: float | None, block: int) -> float:
    return SPARSE_VALUE_BITS + math.log2(block) if bits is None else bits


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
    select_bpw: float
    """Grid-selection bits per block stored apart from the scale, / block size."""
    tensor_bits: int
    """Per-tensor constants (tensor factor, or the single scale of an @layer candidate)."""
    lut_bits: int = 0
    """Per-tensor LUT images of learned codebooks: learned grids x (levels x LUT width, plus the
    8-bit power-of-two exponent of each image under ``lut=FMT``)."""
    sparse_entries: int = 0
    """Outliers + residual entries stored aside."""
    sparse_bits_per_entry: float = 0.0

    @property
    def block_bpw(self) -> float:
        """Everything paid per weight or per block: the bpw of an infinitely large tensor."""
        return self.atom_bpw + self.scale_bpw + self.sign_bpw + self.select_bpw

    @property
    def sparse_bpw(self) -> float:
        return self.sparse_entries * self.sparse_bits_per_entry / self.numel

    @property
    def bpw(self) -> float:
        """Total bits per weight for this tensor: every part included."""
        return self.block_bpw + (self.tensor_bits + self.lut_bits) / self.numel + self.sparse_bpw

    @property
    def total_bits(self) -> float:
        return self.bpw * self.numel


@dataclass(frozen=True)
class Candidate:
    """One quantization format: what ``dse measure`` measures and ``dse explore`` assigns."""

    atoms: tuple[AtomFormat, ...]
    """The grids a block may use: one, or several for a grid set."""
    scale: ScaleFormat
    block_size: int | None
    """Elements per block along the input dimension; None = one scale per tensor (@layer)."""
    rule: ScaleRule
    signed: bool
    """Signed absmax: the block's largest-magnitude weight maps to +top (BOF4-S eq. 4)."""
    tensor_scale: TensorScale
    selection: Selection | None = None
    """Where a grid set stores its selection bits (None for a single grid)."""
    act_weighted: bool = False
    lut_format: AtomFormat | None = None
    """Value set the LUT stores codebook levels in (None: exact float32 levels)."""
    outliers: Outliers | None = None
    residual: Residual | None = None

    def __hash__(self) -> int:
        # Hashed once per instance: the engine looks its per-candidate recipe up on every call,
        # and hashing every field cost ~3 us of a small call's ~90. Dropped on pickling
        # (__getstate__): str hashes differ between processes.
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = self.__dict__["_hash"] = hash(tuple(getattr(self, f.name) for f in fields(self)))
        return cached

    def __getstate__(self) -> dict[str, object]:
        return {key: value for key, value in self.__dict__.items() if key != "_hash"}

    @property
    def atom(self) -> AtomFormat:
        """The first (primary) grid."""
        return self.atoms[0]

    @property
    def dual(self) -> bool:
        """More than one grid: a pair or a larger grid set."""
        return len(self.atoms) > 1

    @property
    def placeholders(self) -> tuple[str, ...]:
        """``NAME: note`` for each grid or grid set whose values are a reconstruction (Split87,
        SH4, SFP4's shift): results that use them are not the published format's."""
        notes = [f"{a.name}: {a.note}" for a in self.atoms if a.placeholder]
        named = get_grid_set(_grids_name(self.atoms))
        if named is not None and named.placeholder:
            notes.append(f"{named.name}: {named.note}")
        return tuple(dict.fromkeys(notes))

    @property
    def selection_bits(self) -> int:
        """Bits that name a block's grid: ceil(log2 n) for n grids."""
        return math.ceil(math.log2(len(self.atoms)))

    @property
    def stored_selection_bits(self) -> int:
        """Selection bits stored apart from the scale (the rest sit in its sign bit or metabit)."""
        free = 1 if self.selection in (Selection.SIGN, Selection.META) else 0
        return max(self.selection_bits - free, 0)

    @functools.cached_property  # frozen: computed once; explorers ask for it per tensor and point
    def name(self) -> str:
        core = _grids_name(self.atoms) + f"s{self.scale.name}"
        if self.block_size is None:
            core += "@layer"
        elif self.block_size != DEFAULT_BLOCK:
            core += f"@{self.block_size}"
        d = _defaults(self.atoms, self.scale, self.block_size)
        opts = []
        if self.rule is not d.rule:
            opts.append(self.rule.value)
        if self.signed != d.signed:
            opts.append("signed" if self.signed else "absmax")
        if self.tensor_scale is not d.tensor_scale:
            opts.append(self.tensor_scale.value)
        if self.selection is not _default_selection(self.atoms, self.scale, self.signed):
            opts.append(self.selection.value if self.selection else "")
        if self.act_weighted:
            opts.append("aw")
        if self.lut_format is not None:
            opts.append(f"lut={self.lut_format.name}")
        corrections = []
        if self.outliers is not None:
            corrections.append(f"opq({_fmt_num(self.outliers.quantile)}{_fmt_bits(self.outliers.bits_per_entry)})")
        if self.residual is not None:
            corrections.append(f"res({_fmt_percent(self.residual.fraction)}%{_fmt_bits(self.residual.bits_per_entry)})")
        return ":".join([core, *opts]) + "".join(f"+{c}" for c in corrections)

    def __str__(self) -> str:
        return self.name

    @functools.cached_property  # frozen: computed once; every measure call asks for it
    def target(self) -> float:
        """The grid value a block's extreme is mapped to: the primary grid's qmax (or +top when signed)."""
        return _target(self.atom, self.signed)

    def grid_factor(self, index: int) -> float:
        """Factor on grid ``index``'s values so that its (unshifted) extreme equals the primary grid's."""
        return self.target / _target(self.atoms[index], self.signed)

    @property
    def learned(self) -> bool:
        """Some grid is fitted to each tensor (DDn)."""
        return any(a.kind is AtomKind.LEARNED for a in self.atoms)

    @property
    def lut_width_bits(self) -> int:
        """Bits per stored LUT level (float32 when no LUT output format is given)."""
        return 32 if self.lut_format is None else self.lut_format.code_bits

    def bits(self, numel: int, sparse_entries: int = 0) -> BitBreakdown:
        """Exact bits for a tensor of ``numel`` weights with ``sparse_entries`` stored aside."""
        learned = sum(a.kind is AtomKind.LEARNED for a in self.atoms)
        exponent = LUT_EXPONENT_BITS if self.lut_format is not None else 0
        lut_bits = learned * (max(a.n_values for a in self.atoms) * self.lut_width_bits + exponent)
        block = self.block_size or 0
        entry_bits = 0.0
        if sparse_entries:
            spec = self.outliers or self.residual
            assert spec is not None
            entry_bits = spec.entry_bits(block or 1 << 16)
        atom_bits = max(a.code_bits for a in self.atoms)
        if self.block_size is None:  # one scale per tensor, plus its sign if the container has none
            sign_bits = int(self.signed and not self.scale.signed)
            return BitBreakdown(numel, atom_bits, 0.0, 0.0, 0.0, self.scale.bits + sign_bits, lut_bits,
                                sparse_entries, entry_bits)
        sign = 1.0 if self.signed and not self.scale.signed else 0.0
        select = float(self.stored_selection_bits)
        tensor_bits = {TensorScale.NONE: 0, TensorScale.FP32: 32, TensorScale.POT: 8}[self.tensor_scale]
        return BitBreakdown(
            numel=numel,
            atom_bpw=atom_bits,
            scale_bpw=self.scale.bits / block,
            sign_bpw=sign / block,
            select_bpw=select / block,
            tensor_bits=tensor_bits,
            lut_bits=lut_bits,
            sparse_entries=sparse_entries,
            sparse_bits_per_entry=entry_bits,
        )

    @property
    def nominal_bpw(self) -> float:
        """Bits per weight without per-tensor constants or sparse entries (6.5 for E2M3sUE4M4)."""
        return self.bits(1 << 62).block_bpw


def _grids_name(atoms: tuple[AtomFormat, ...]) -> str:
    """``A|B|...``, or the grid set's name when the grids are exactly a named set (``SFP4``)."""
    names = tuple(a.name for a in atoms)
    for grid_set in GRID_SETS.values():
        if grid_set.atoms == names:
            return grid_set.name
    return "|".join(names)


def _target(atom: AtomFormat, signed: bool) -> float:
    return atom.scale_top if signed else atom.scale_target


def _fmt_num(x: float | Decimal) -> str:
    """The shortest decimal that parses back to ``x`` exactly, never with a '+' (a name splits
    corrections at '+'): 0.95, 1e-05, 1e16, 33."""
    d = (x if isinstance(x, Decimal) else Decimal(repr(float(x)))).normalize()
    if -7 < d.adjusted() < 16:
        return format(d, "f")
    return format(d, "e").replace("e+", "e")


def _fmt_percent(fraction: float) -> str:
    """``fraction`` as the percentage P that :func:`_percent_fraction` turns back into it exactly."""
    return _fmt_num(Decimal(repr(fraction)).scaleb(2))


def _percent_fraction(text: str) -> float:
    """P % as a fraction, rounded once from the exact decimal P/100 (so printing round-trips)."""
    return float(Decimal(text).scaleb(-2))


def _fmt_bits(bits: float | None) -> str:
    return ",blockidx" if bits is None else ("" if bits == SPARSE_VALUE_BITS + SPARSE_INDEX_BITS else f",{_fmt_num(bits)}")


@dataclass(frozen=True)
class _Defaults:
    rule: ScaleRule
    signed: bool
    tensor_scale: TensorScale


def _defaults(atoms: tuple[AtomFormat, ...], scale: ScaleFormat, block_size: int | None) -> _Defaults:
    signed = atoms[0].signed_scale
    if block_size is None:
        # One scale per tensor: round up so nothing clips (the SOP per-layer POT baseline).
        return _Defaults(ScaleRule.CEIL, signed, TensorScale.NONE)
    rule = ScaleRule.FLOOR if scale.power_of_two else ScaleRule.NEAREST
    tensor = TensorScale.NONE if scale.wide_range else TensorScale.FP32
    return _Defaults(rule, signed, tensor)


def _default_selection(atoms: tuple[AtomFormat, ...], scale: ScaleFormat, signed: bool) -> Selection | None:
    if len(atoms) == 1:
        return None
    if scale.metabit:
        return Selection.META
    if scale.signed and not signed and _mirror_closed(atoms):
        return Selection.SIGN
    return Selection.BIT


def _mirror_closed(atoms: tuple[AtomFormat, ...]) -> bool:
    """Every grid's mirror image -G is in the set (symmetric grids, or shifts by +-c)."""
    sets = {tuple(a.values) for a in atoms}
    return all(tuple(-v for v in reversed(a.values)) in sets for a in atoms)


_RULES = {r.value: r for r in ScaleRule}
_TENSOR = {t.value: t for t in TensorScale}
_SELECT = {s.value: s for s in Selection}
_SIGN = {"signed": True, "absmax": False}
_CORRECTION = re.compile(r"(opq|res)\((.*)\)")


_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e-?[0-9]+)?", re.ASCII)
"""A number in a name: ASCII decimal, no sign, no '+' (it would split the name), no nan/inf."""
_BLOCK = re.compile(r"[0-9]+", re.ASCII)
MAX_ENTRY_BITS = 1024.0
"""Largest cost of one stored outlier/residual entry a name may state (bits, value + index)."""


def parse_candidate(text: str) -> Candidate:
    """Parse a candidate name or an industry alias (``NVFP4``, ``Q4_0``: :mod:`quant.aliases`);
    raises UnknownFormatError / CandidateError with a one-line fix.

    Every accepted name prints canonically (``Candidate.name``) and parses back to the same
    candidate; an option or correction given twice is an error, not "the last one wins".
    """
    text = text.strip()
    alias = aliases.lookup(text)
    if alias is not None:
        return _parse_name(alias.canonical)
    family = aliases.ambiguous(text)
    if family:
        raise CandidateError(f"candidate {brief(text, 80)} names {len(family)} formats; write {' or '.join(family)}")
    try:
        return _parse_name(text)
    except (CandidateError, UnknownFormatError) as err:
        close = aliases.suggest(text)
        if not close:
            raise
        raise type(err)(f"{err}; or an industry name: {', '.join(close)}?") from None


def _parse_name(text: str) -> Candidate:
    raw = brief(text, 80)
    head, *corrections = text.split("+")
    core, *options = head.split(":")
    block: int | None = DEFAULT_BLOCK
    if "@" in core:
        core, block_text = core.rsplit("@", 1)
        if block_text.lower() == "layer":
            block = None
        elif _BLOCK.fullmatch(block_text) and 0 < int(block_text) <= 1 << 24:
            block = int(block_text)
        else:
            raise CandidateError(f"candidate {raw}: block must be a positive integer up to 2^24 (ASCII digits) "
                                 "or 'layer'")
    atoms, scale = _split_atoms_scale(raw, core, block)
    d = _defaults(atoms, scale, block)
    given: dict[str, object] = {}
    for opt in (o.strip().lower() for o in options):
        value: object
        if opt in _RULES:
            kind, value = "scale rule", _RULES[opt]
        elif opt in _SIGN:
            kind, value = "sign", _SIGN[opt]
        elif opt in _TENSOR:
            kind, value = "tensor factor", _TENSOR[opt]
        elif opt in _SELECT:
            kind, value = "selection", _SELECT[opt]
        elif opt == "aw":
            kind, value = "aw", True
        elif opt.startswith("lut="):
            kind, value = "lut", get_atom(opt[4:])
        else:
            known = ", ".join([*_RULES, *_SIGN, *_TENSOR, *_SELECT, "aw", "lut=FMT"])
            raise CandidateError(f"candidate {raw}: unknown option {brief(opt, 30)} (known: {known})")
        if kind in given:
            raise CandidateError(f"candidate {raw}: {kind} given twice; keep one option")
        given[kind] = value
    outliers, residual = _parse_corrections(raw, corrections)
    signed = cast(bool, given.get("sign", d.signed))
    candidate = Candidate(
        atoms, scale, block, cast(ScaleRule, given.get("scale rule", d.rule)), signed,
        cast(TensorScale, given.get("tensor factor", d.tensor_scale)),
        cast(Selection | None, given.get("selection", _default_selection(atoms, scale, signed))),
        bool(given.get("aw", False)), cast(AtomFormat | None, given.get("lut")), outliers, residual,
    )
    _validate(raw, candidate)
    return candidate


def _parse_corrections(raw: str, parts: list[str]) -> tuple[Outliers | None, Residual | None]:
    outliers = residual = None
    for part in parts:
        match = _CORRECTION.fullmatch(part.strip().lower())
        if not match:
            raise CandidateError(f"candidate {raw}: unknown correction {brief(part, 30)}; use opq(0.95) or res(0.5%)")
        kind, (value, *rest) = match[1], [a.strip() for a in match[2].split(",")]
        if len(rest) > 1:
            raise CandidateError(f"candidate {raw}: {kind}(...) takes a value and optional bits")
        if (outliers if kind == "opq" else residual) is not None:
            raise CandidateError(f"candidate {raw}: {kind}(...) given twice; keep one")
        bits: float | None = SPARSE_VALUE_BITS + SPARSE_INDEX_BITS
        if rest and rest[0] != "blockidx":
            bits = _number(raw, rest[0], "bits per entry")
            if not 1.0 <= bits <= MAX_ENTRY_BITS:
                raise CandidateError(f"candidate {raw}: bits per entry must be in [1, {MAX_ENTRY_BITS:g}] "
                                     "(value + index bits), e.g. res(0.5%,32)")
        elif rest:
            bits = None
        if kind == "opq":
            q = _number(raw, value, "opq quantile")
            if not 0.0 < q < 1.0:
                raise CandidateError(f"candidate {raw}: opq quantile must be in (0, 1), e.g. opq(0.95)")
            outliers = Outliers(q, bits)
        else:
            if not value.endswith("%"):
                raise CandidateError(f"candidate {raw}: res takes a percentage, e.g. res(0.5%)")
            _number(raw, value[:-1], "res percentage")
            fraction = _percent_fraction(value[:-1])
            if not 0.0 < fraction < 1.0:
                raise CandidateError(f"candidate {raw}: res percentage must be in (0, 100)")
            residual = Residual(fraction, bits)
    if outliers is not None and residual is not None and outliers.bits_per_entry != residual.bits_per_entry:
        raise CandidateError(f"candidate {raw}: opq and res must use the same bits per entry")
    return outliers, residual


def _number(raw: str, text: str, what: str) -> float:
    value = float(text) if _NUMBER.fullmatch(text) else math.nan
    if not math.isfinite(value):  # also 1e999, which float() reads as inf
        raise CandidateError(f"candidate {raw}: {what} {brief(text, 30)} is not a finite decimal number "
                             "(ASCII digits, e.g. 0.5)")
    return value


def _validate(raw: str, c: Candidate) -> None:
    if len(c.atoms) > MAX_GRIDS:
        raise CandidateError(f"candidate {raw}: at most {MAX_GRIDS} grids per block")
    if c.dual and len({a.code_bits for a in c.atoms}) > 1:
        raise CandidateError(f"candidate {raw}: the grids of a set need the same code width")
    if c.selection is Selection.SIGN and not (c.scale.signed and not c.signed and _mirror_closed(c.atoms)):
        raise CandidateError(
            f"candidate {raw}: :selsign needs a signed scale, :absmax and symmetric grids "
            "(or a set holding each grid's mirror image); use :selbit"
        )
    if c.selection is Selection.META and not c.scale.metabit:
        raise CandidateError(f"candidate {raw}: :selmeta needs a scale with a metabit (S1E5M5); use :selbit")
    if not c.dual and c.selection is not None:
        raise CandidateError(f"candidate {raw}: :{c.selection.value} needs a grid set A|B")
    if c.tensor_scale is not TensorScale.NONE and c.scale.wide_range:
        raise CandidateError(
            f"candidate {raw}: {c.scale.name} spans more range than any tensor needs; drop :{c.tensor_scale.value}"
        )
    if c.outliers is not None and c.block_size is not None:
        # Samuelson: in n samples no |x - mean| exceeds (n-1)/sqrt(n) sample standard deviations.
        reach = (c.block_size - 1) / math.sqrt(c.block_size)
        if c.outliers.threshold_sigmas(c.block_size) >= reach:
            raise CandidateError(
                f"candidate {raw}: opq({_fmt_num(c.outliers.quantile)}) flags |w| > "
                f"{c.outliers.threshold_sigmas(c.block_size):.2f} sigma_block, but no weight in a block of "
                f"{c.block_size} can exceed {reach:.2f}; lower the quantile or use a larger block"
            )
    if c.rule is ScaleRule.GGML:
        _validate_ggml(raw, c)
    if c.block_size is None:
        if c.tensor_scale is not TensorScale.NONE:
            raise CandidateError(f"candidate {raw}: an @layer scale is already per tensor; drop :{c.tensor_scale.value}")
        if c.rule in (ScaleRule.MSE, ScaleRule.FOUR_OVER_SIX) or c.dual or c.outliers:
            raise CandidateError(f"candidate {raw}: :mse, :4o6, pairs and opq work per block; use a block size")


def _validate_ggml(raw: str, c: Candidate) -> None:
    """:ggml is llama.cpp's exact arithmetic: only the shapes that arithmetic covers."""
    ggml_grid = c.atom.name in ("Q4", "Q5")
    plain = (c.scale.name == "FP16" and c.block_size is not None and c.tensor_scale is TensorScale.NONE
             and not c.dual and not c.act_weighted and c.lut_format is None and c.outliers is None
             and c.residual is None)
    if not plain or not ((ggml_grid and c.signed) or (c.atom.kind is AtomKind.INT and not ggml_grid and not c.signed)):
        raise CandidateError(
            f"candidate {raw}: :ggml reproduces llama.cpp's Q4_0, Q5_0 and Q8_0 only: write Q4_0, Q5_0 or "
            "Q8_0 (= Q4sFP16@32:ggml:tnone, Q5sFP16@32:ggml:tnone, INT8sFP16@32:ggml:tnone)"
        )


def _split_atoms_scale(raw: str, core: str, block: int | None) -> tuple[tuple[AtomFormat, ...], ScaleFormat]:
    """Split ``ATOM[|ATOM]sSCALE`` at the 's' that leaves valid atoms and a valid scale.

    Atom and scale names may themselves contain 's' (BOF4S, SH4, S1E5M5), so every split is tried.
    """
    positions = [i for i, ch in enumerate(core) if ch in "sS"]
    if not positions:
        raise CandidateError(
            f"candidate {raw}: expected ATOMsSCALE[@BLOCK], e.g. E2M3sUE4M4 or NF4sFP32@64"
        )
    first_error: UnknownFormatError | None = None
    for i in positions:
        try:
            scale = get_scale(core[i + 1:])
        except UnknownFormatError as err:
            first_error = first_error or err
            continue
        try:  # the first split with a valid scale is the reading; its atom errors are the user's
            return tuple(atom for name in core[:i].split("|") for atom in _resolve_grids(name, block)), scale
        except UnknownFormatError as err:
            raise UnknownFormatError(f"candidate {raw}: {err}") from None
    raise UnknownFormatError(f"candidate {raw}: {first_error}")


_BLOCK_MATCHED = ("BOF4", "BOF4S")


def _resolve_grids(name: str, block: int | None) -> tuple[AtomFormat, ...]:
    """The grids ``name`` stands for: a grid set's (``SFP4``), or the one atom."""
    grid_set = get_grid_set(name)
    if grid_set is not None:
        return tuple(resolve_atom(a, block) for a in grid_set.atoms)
    return (resolve_atom(name, block),)


def resolve_atom(name: str, block: int | None) -> AtomFormat:
    """The atom ``name``; ``BOF4`` / ``BOF4S`` mean the table fitted for this block size."""
    key = name.strip().upper()
    if key not in _BLOCK_MATCHED:
        return get_atom(name)
    size = 64 if block is None else block
    try:
        return get_atom(f"{key}-{size}")
    except UnknownFormatError:
        raise CandidateError(
            f"{key} has no table for block {size}; use a block with a table (see `dse formats`) "
            "or derive one with quant.learned.derive_bof4"
        ) from None
