"""Atom formats: the element grids a block of weights is rounded onto.

Every atom, whether an ExMy float, a symmetric integer or a codebook, is one frozen record
holding its exact sorted values: the contents of the decode LUT. Floats generate their values
by enumerating every code (as ml_dtypes does); codebooks write theirs out with a source.

Names follow the SOP paper's candidate notation and are case-insensitive: ``E2M3``, ``E4M3``,
``INT4``, ``NF4``, ``BOF4-64``, ``BOF4S-32``, ``DD4``... Any ExMy, INTn and DDn a user names is
generated on demand; a user codebook is registered with :func:`register_codebook`. In candidate
names ``BOF4`` and ``BOF4S`` mean the table for the candidate's block size.
"""

from __future__ import annotations

import difflib
import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from types import MappingProxyType

import numpy as np

from quant import codebooks
from quant.errors import UnknownFormatError, brief
from quant.floats import FloatSpec, Specials, ieee_bias
from quant.lookup import LookupTable, lookup_table


class AtomKind(enum.Enum):
    """How an atom's values come about; decides how hardware decodes it."""

    FLOAT = "float"
    """ExMy encoding: decodable by shifting, no LUT needed."""
    INT = "int"
    """Symmetric integer grid -q..q."""
    CODEBOOK = "codebook"
    """Fixed table of values: decoded through a LUT."""
    LEARNED = "learned"
    """Per-tensor table fitted to the weights (DD4): decoded through a LUT, stored per layer."""


@dataclass(frozen=True)
class AtomFormat:
    """The representable values of one atom format."""

    name: str
    """Canonical name as printed in candidate names, e.g. ``E2M3`` or ``NF4``."""
    values: tuple[float, ...]
    """Sorted, unique, exact values (each exactly a float32)."""
    code_bits: int
    """Width of one stored code in bits."""
    kind: AtomKind
    source: str
    """Spec or paper (and table) the values come from."""
    codes: tuple[int, ...] = ()
    """Bit pattern stored for each value (floats: the encoding; otherwise the index)."""
    float_spec: FloatSpec | None = None
    signed_scale: bool = False
    """Designed for signed-absmax block scales (the block extreme maps to +max), e.g. BOF4-S."""
    note: str = ""
    """Caveat shown by ``dse formats`` (e.g. 'reconstructed')."""
    ml_dtypes_name: str | None = None
    """Independent implementation used as the test oracle, when ml_dtypes has one."""
    shift: float = 0.0
    """Constant added to every value of a shifted grid ``BASE~SHIFT`` (0 for every other atom)."""

    def __post_init__(self) -> None:
        if not self.codes:
            object.__setattr__(self, "codes", tuple(range(len(self.values))))

    @property
    def n_values(self) -> int:
        return len(self.values)

    @property
    def qmax(self) -> float:
        """Largest magnitude: absmax scaling maps a block's largest |w| here."""
        return max(abs(self.values[0]), abs(self.values[-1]))

    @property
    def top(self) -> float:
        """Largest positive value: signed-absmax scaling maps the block extreme here."""
        return self.values[-1]

    @property
    def scale_target(self) -> float:
        """Largest magnitude of the unshifted values: what absmax scaling maps a block's max to.
        A shifted grid keeps its base's scale, so it decodes as ``s * (base + shift)``."""
        return max(abs(self.values[0] - self.shift), abs(self.values[-1] - self.shift))

    @property
    def scale_top(self) -> float:
        """Largest unshifted value: what signed-absmax scaling maps the block extreme to."""
        return self.values[-1] - self.shift

    @property
    def placeholder(self) -> bool:
        """Values reconstructed or guessed because the real ones are unpublished (Split87, SH4)."""
        return self.note.startswith("reconstructed")

    @property
    def symmetric(self) -> bool:
        v = np.asarray(self.values)
        return bool(np.array_equal(v, -v[::-1]))

    @cached_property  # frozen: computed once; the OCP MX scale rule asks on every call
    def emax(self) -> int:
        """Exponent of the top binade, floor(log2(qmax)): the OCP MX scale rule subtracts it."""
        return math.floor(math.log2(self.qmax))

    @cached_property
    def table(self) -> LookupTable:
        """Round to nearest onto the values, ties to the even magnitude index: for FP and INT
        that is RNE on the code, as ml_dtypes and numpy.rint (quant.lookup's one tie rule)."""
        return lookup_table(np.asarray(self.values, dtype=np.float32))


def _float_atom(
    e: int, m: int, specials: Specials, ml_name: str | None, source: str
) -> AtomFormat:
    spec = FloatSpec(e, m, ieee_bias(e), signed=True, specials=specials)
    pairs = spec.decode_all()
    return AtomFormat(
        name=f"E{e}M{m}",
        values=tuple(v for v, _ in pairs),
        codes=tuple(c for _, c in pairs),
        code_bits=spec.bits,
        kind=AtomKind.FLOAT,
        source=source,
        float_spec=spec,
        ml_dtypes_name=ml_name,
    )


def _int_atom(bits: int) -> AtomFormat:
    q = (1 << (bits - 1)) - 1
    return AtomFormat(
        name=f"INT{bits}",
        values=tuple(float(k) for k in range(-q, q + 1)),
        codes=tuple(k & ((1 << bits) - 1) for k in range(-q, q + 1)),
        code_bits=bits,
        kind=AtomKind.INT,
        source=f"symmetric two's-complement -{q}..{q} (the -{q + 1} code unused), "
        "as mit-han-lab/fouroversix quantize/pytorch/reference.py",
    )


def _ggml_atom(bits: int) -> AtomFormat:
    """llama.cpp's offset integer grid of Q4_0 / Q5_0: -2**(n-1) .. 2**(n-1)-1, stored as
    code = value + 2**(n-1) (ggml-quants.c quantize_row_q4_0_ref; gguf.quants.Q4_0)."""
    half = 1 << (bits - 1)
    return AtomFormat(
        name=f"Q{bits}",
        values=tuple(float(k) for k in range(-half, half)),
        codes=tuple(k + half for k in range(-half, half)),
        code_bits=bits,
        kind=AtomKind.INT,
        source=f"llama.cpp Q{bits}_0 grid -{half}..{half - 1}, the block's largest-magnitude weight maps to "
        f"-{half} (ggml-quants.c quantize_row_q{bits}_0_ref)",
        signed_scale=True,
    )


def _codebook(
    name: str, values: Iterable[float], source: str, *, signed_scale: bool = False,
    kind: AtomKind = AtomKind.CODEBOOK, note: str = "",
) -> AtomFormat:
    v32 = np.asarray(list(values), dtype=np.float32)
    if v32.size < 2 or not np.all(np.isfinite(v32)):
        raise UnknownFormatError(f"codebook {brief(name)} needs at least two finite values")
    uniq = np.unique(v32)
    if uniq.size != v32.size:
        raise UnknownFormatError(f"codebook {brief(name)} has duplicate values (after float32 rounding)")
    return AtomFormat(
        name=name,
        values=tuple(float(x) for x in uniq),
        code_bits=max(1, math.ceil(math.log2(uniq.size))),
        kind=kind,
        source=source,
        signed_scale=signed_scale,
        note=note,
    )


_OCP_MX = "OCP MX v1.0 §5.3; microsoft/microxcaling mx/formats.py"
_OCP_FP8 = "OCP OFP8 (8-bit floating point) v1.0, Table 1"


def _builtin_atoms() -> dict[str, AtomFormat]:
    atoms = [
        _float_atom(2, 1, Specials.NONE, "float4_e2m1fn", f"FP4 E2M1: {_OCP_MX}"),
        _float_atom(2, 3, Specials.NONE, "float6_e2m3fn", f"FP6 E2M3: {_OCP_MX}"),
        _float_atom(3, 2, Specials.NONE, "float6_e3m2fn", f"FP6 E3M2: {_OCP_MX}"),
        _float_atom(4, 3, Specials.FN, "float8_e4m3fn", f"FP8 E4M3 (max 448): {_OCP_FP8}"),
        _float_atom(5, 2, Specials.IEEE, "float8_e5m2", f"FP8 E5M2: {_OCP_FP8}"),
        _int_atom(4),
        _int_atom(8),
        _ggml_atom(4),
        _ggml_atom(5),
        _codebook("NF4", codebooks.NF4, codebooks.NF4_SOURCE),
        _codebook("BOF4-64", codebooks.BOF4_MSE_64, codebooks.bof4_source("Table 6, MSE, I=64")),
        _codebook("BOF4MAE-64", codebooks.BOF4_MAE_64, codebooks.bof4_source("Table 6, MAE, I=64")),
        _codebook(
            "BOF4SMAE-64", codebooks.BOF4S_MAE_64,
            codebooks.bof4_source("Table 6, BOF4-S MAE, I=64"), signed_scale=True,
        ),
        _codebook("SPLIT87", codebooks.BOF4S_MSE[16], codebooks.DERIVED_SOURCE, signed_scale=True,
                  note=codebooks.SPLIT87_NOTE),
        _codebook("SH4", codebooks.SH4, "mid-rise uniform 4-bit grid", note=codebooks.SH4_NOTE),
        _learned(4),
    ]
    for block, values in codebooks.BOF4_MSE_DERIVED.items():
        atoms.append(_codebook(f"BOF4-{block}", values, codebooks.DERIVED_SOURCE))
    for block, values in codebooks.BOF4S_MSE.items():
        source = (codebooks.DERIVED_SOURCE if block in codebooks.BOF4_MSE_DERIVED else
                  codebooks.bof4_source(f"{'Table 6' if block == 64 else 'Table 7'}, BOF4-S MSE, I={block}"))
        atoms.append(_codebook(f"BOF4S-{block}", values, source, signed_scale=True))
    return {a.name: a for a in atoms}


def _learned(bits: int) -> AtomFormat:
    """DDn: a per-tensor codebook of 2**n levels fitted to the weights (quant.learned).

    The registered values are only the starting point of the fit: NF-style normal quantiles,
    which for 16 levels is the NF4 table itself (no scipy import for the common case).
    """
    if bits == 4:
        init: Iterable[float] = codebooks.NF4
    else:
        from quant.learned import normal_quantile_levels

        init = normal_quantile_levels(1 << bits)
    return _codebook(
        f"DD{bits}", init,
        "SOP per-layer LUT codebook (arXiv 2605.14929): weighted Lloyd-Max per tensor, see quant/learned.py",
        kind=AtomKind.LEARNED, note="learned per tensor",
    )


_BUILTIN = _builtin_atoms()
_USER: dict[str, AtomFormat] = {}

ATOMS: Mapping[str, AtomFormat] = MappingProxyType(_BUILTIN)
"""Built-in atoms by canonical name (read-only). User codebooks live beside them."""

_FLOAT_NAME = re.compile(r"E(\d+)M(\d+)", re.ASCII)
_SHIFT_NAME = re.compile(r"(.+?)~([-+]?(?:\d+\.?\d*|\.\d+)(?:E[-+]?\d+)?)", re.ASCII)
_INT_NAME = re.compile(r"INT(\d+)", re.ASCII)
_LEARNED_NAME = re.compile(r"DD(\d+)", re.ASCII)


def register_codebook(name: str, values: Iterable[float], source: str = "user-defined") -> AtomFormat:
    """Register (or replace) a user codebook, e.g. a vendor grid whose values we do not ship.

    A user codebook may replace a reconstructed built-in of the same name (Split87, SH4), but
    not an exact one.
    """
    key = name.upper()
    if key in _BUILTIN and not _BUILTIN[key].note.startswith("reconstructed"):
        raise UnknownFormatError(f"codebook name {brief(name)} is a built-in format; choose another name")
    if _FLOAT_NAME.fullmatch(key) or _INT_NAME.fullmatch(key) or _LEARNED_NAME.fullmatch(key):
        raise UnknownFormatError(f"codebook name {brief(name)} would shadow a float/int format name")
    atom = _codebook(key, values, source)
    _USER[key] = atom
    return atom


def known_atom_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_USER))


def get_atom(name: str) -> AtomFormat:
    """The atom called ``name`` (case-insensitive); generates any ExMy / INTn on demand."""
    key = name.strip().upper()
    if key in _USER:
        return _USER[key]
    if key in _BUILTIN:
        return _BUILTIN[key]
    return _generated_atom(key, name)


@cache
def _generated_atom(key: str, name: str) -> AtomFormat:
    if match := _SHIFT_NAME.fullmatch(key):
        return shifted_atom(get_atom(match[1]), float(match[2]))
    if match := _FLOAT_NAME.fullmatch(key):
        e, m = int(match[1]), int(match[2])
        if not (1 <= e <= 8 and 0 <= m <= 10 and e + m <= 15):
            raise UnknownFormatError(f"float atom {brief(name)}: need 1<=E<=7, 1<=M<=10, E+M<=15")
        if m == 0:
            raise UnknownFormatError(f"float atom {brief(name)}: an atom needs mantissa bits (M>=1)")
        if e == 8:  # all codes finite: the top binade reaches 2**128, beyond float32 (the working type)
            raise UnknownFormatError(f"float atom {brief(name)}: an all-finite E8My exceeds float32's range; use E<=7")
        # A user-named ExMy other than the OCP FP8 pair is taken as all-finite (no Inf/NaN),
        # the OCP MX convention for FP4/FP6 elements: every code is a usable value.
        return _float_atom(e, m, Specials.NONE, None, f"ExMy E{e}M{m}, bias {ieee_bias(e)}, "
                           "subnormals, all codes finite (OCP MX element convention)")
    if match := _LEARNED_NAME.fullmatch(key):
        if not 2 <= int(match[1]) <= 8:
            raise UnknownFormatError(f"learned atom {brief(name)}: need 2 <= bits <= 8")
        return _learned(int(match[1]))
    if match := _INT_NAME.fullmatch(key):
        bits = int(match[1])
        if not 2 <= bits <= 16:
            raise UnknownFormatError(f"integer atom {brief(name)}: need 2 <= bits <= 16")
        return _int_atom(bits)
    raise UnknownFormatError(_unknown_message("atom format", name, known_atom_names()))


def shifted_atom(base: AtomFormat, shift: float) -> AtomFormat:
    """``BASE~SHIFT``: the fixed grid ``base`` with ``shift`` (in the base's units) added to every
    value, keeping the base's codes and block scale (Grid Games' shifted grids, arXiv 2605.12327).

    A block using it decodes as ``s * (q + shift)``: the base grid's product plus a per-block
    correction ``s * shift * sum(x)``, which is how a tensor core can run it [inference].
    """
    if base.kind is AtomKind.LEARNED or base.shift:
        raise UnknownFormatError(f"shifted grid {base.name}~{shift:g}: only a fixed, unshifted grid can be shifted")
    if not math.isfinite(shift) or shift == 0.0:
        raise UnknownFormatError(f"shifted grid {base.name}~{shift:g}: the shift must be finite and non-zero")
    values = np.asarray(base.values, np.float64) + shift
    if not np.array_equal(values.astype(np.float32).astype(np.float64), values):
        raise UnknownFormatError(f"shifted grid {base.name}~{shift:g}: base + shift is not exact in float32; "
                                 "use a shift with few significant bits, e.g. 0.5 or 0.25")
    return AtomFormat(
        name=f"{base.name}~{shift:g}", values=tuple(float(v) for v in values), code_bits=base.code_bits,
        kind=base.kind, source=f"{base.name} shifted by {shift:g} (Grid Games, arXiv 2605.12327)",
        codes=base.codes, float_spec=base.float_spec, note=base.note, shift=shift,
    )


@dataclass(frozen=True)
class GridSet:
    """A named set of grids chosen per block, written in a candidate as its name."""

    name: str
    atoms: tuple[str, ...]
    source: str
    note: str = ""

    @property
    def placeholder(self) -> bool:
        return self.note.startswith("reconstructed")


# SFP4 (Grid Games, arXiv 2605.12327, abstract): "NVFP4 plus two shifted variants", one of three
# grids per block of 16 under NVFP4's E4M3 scale. The shift is not published where we could read
# it. +-0.25 (half of E2M1's finest step) measured best of {0.25, 0.5, 1} on all-MiniLM-L6-v2
# (relative MSE 7.12e-3, 7.15e-3, 8.36e-3 under E4M3 at block 16; README "Grid sets").
SFP4_SHIFT = 0.25
GRID_SETS: Mapping[str, GridSet] = MappingProxyType({
    "SFP4": GridSet(
        "SFP4", ("E2M1", f"E2M1~{SFP4_SHIFT:g}", f"E2M1~{-SFP4_SHIFT:g}"),
        "Grid Games, arXiv 2605.12327: NVFP4's E2M1 plus two shifted variants",
        note=f"reconstructed: shift +-{SFP4_SHIFT:g} (unpublished; write the grids out to use another)",
    ),
})
"""Grid-set names a candidate may use in place of ``A|B|C`` (``SFP4sE4M3``)."""


def get_grid_set(name: str) -> GridSet | None:
    return GRID_SETS.get(name.strip().upper())


def _unknown_message(kind: str, name: str, known: list[str], generated: str = "any ExMy / INTn / ATOM~SHIFT") -> str:
    close = difflib.get_close_matches(name[:64].upper(), known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {kind} {brief(name)}{hint} (known: {', '.join(known)}, or {generated}; see `dse formats`)"
