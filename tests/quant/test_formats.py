"""Every atom and scale value table against an independent computation."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from scipy.stats import norm

from quant import codebooks
from quant.errors import UnknownFormatError
from quant.formats import ATOMS, AtomKind, get_atom, known_atom_names, register_codebook
from quant.scales import BUILTIN_SCALES, get_scale

FLOAT_ATOMS = [a for a in ATOMS.values() if a.ml_dtypes_name]


def _oracle_values(dtype_name: str, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(code, value) for every finite code, decoded by ml_dtypes."""
    codes = np.arange(1 << bits, dtype=np.uint8)
    values = codes.view(getattr(ml_dtypes, dtype_name)).astype(np.float64)
    finite = np.isfinite(values)
    return codes[finite], values[finite]


@pytest.mark.parametrize("atom", FLOAT_ATOMS, ids=lambda a: a.name)
def test_float_atom_decodes_every_code_like_ml_dtypes(atom):
    codes, values = _oracle_values(atom.ml_dtypes_name, atom.code_bits)
    ours = {c: v for v, c in zip(atom.values, atom.codes)}
    for code, value in zip(codes, values):
        if value == 0.0:
            continue  # +0 and -0: we keep one code for zero
        assert ours[int(code)] == value, f"code {code:#x}"
    assert sorted(set(values)) == list(atom.values)


@pytest.mark.parametrize("atom", FLOAT_ATOMS, ids=lambda a: a.name)
def test_float_atom_rounds_like_ml_dtypes(atom):
    """Round-to-nearest-even on a dense grid: every value, every midpoint (ties), +-1 ulp, random."""
    dtype = getattr(ml_dtypes, atom.ml_dtypes_name)
    v = np.asarray(atom.values, dtype=np.float32)
    mid = ((v[:-1].astype(np.float64) + v[1:]) / 2).astype(np.float32)
    probes = np.concatenate([
        v, mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf)),
        np.random.default_rng(0).uniform(-atom.qmax, atom.qmax, 100_000).astype(np.float32),
    ])
    expected = probes.astype(dtype).astype(np.float32)
    np.testing.assert_array_equal(atom.table.round(probes), expected)


@pytest.mark.parametrize("atom", FLOAT_ATOMS, ids=lambda a: a.name)
def test_float_atom_saturates_beyond_max(atom):
    """Out of range saturates at +-max (ml_dtypes gives NaN/Inf for E4M3/E5M2: a documented difference)."""
    y = np.array([atom.qmax * 1.5, -atom.qmax * 4, 3.0e38], dtype=np.float32)
    np.testing.assert_array_equal(atom.table.round(y), [atom.qmax, -atom.qmax, atom.qmax])


def test_fp_tie_cases_by_hand():
    e2m1 = get_atom("E2M1")
    y = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -5.0], dtype=np.float32)
    # tie to even: 0.25 -> 0 (000), 0.75 -> 1 (010), 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4
    np.testing.assert_array_equal(e2m1.table.round(y), [0, 1, 1, 2, 2, 4, 4, -4])


def test_known_format_properties():
    assert get_atom("E4M3").qmax == 448 and get_atom("E4M3").n_values == 253
    assert get_atom("E5M2").qmax == 57344 and get_atom("E5M2").n_values == 247
    assert get_atom("E2M3").qmax == 7.5 and get_atom("E3M2").qmax == 28
    assert get_atom("E2M1").values[-8:] == (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    assert get_atom("INT4").values == tuple(float(k) for k in range(-7, 8))


@pytest.mark.parametrize("name", ["E3M3", "E1M2", "E2M5", "e3m4"])
def test_user_named_float_atoms_follow_the_exmy_formula(name):
    atom = get_atom(name)
    e, m = atom.float_spec.exponent_bits, atom.float_spec.mantissa_bits
    bias = 2 ** (e - 1) - 1
    positive = {math.ldexp(k, 1 - bias - m) for k in range(1, 1 << m)}  # subnormals
    positive |= {math.ldexp((1 << m) + k, x - bias - m) for x in range(1, 1 << e) for k in range(1 << m)}
    assert atom.values == tuple(sorted({0.0} | positive | {-p for p in positive}))
    assert atom.code_bits == 1 + e + m


def test_nf4_matches_its_construction():
    """bitsandbytes create_normal_map(offset=0.9677083), recomputed with scipy's normal quantile."""
    offset = 0.9677083
    pos = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
    neg = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
    v = np.sort(np.concatenate([pos, [0.0], neg]))
    v /= v.max()
    np.testing.assert_allclose(get_atom("NF4").values, v.astype(np.float32), atol=2e-7)


def test_codebook_tables_match_published_digits():
    """Spot digits from the BOF4 paper (arXiv 2505.06653 Tables 6/7) and bitsandbytes NF4."""
    assert get_atom("NF4").values[1] == np.float32(-0.6961928009986877)
    assert get_atom("BOF4-64").values[1] == np.float32(-0.7535245418548584)
    assert get_atom("BOF4MAE-64").values[14] == np.float32(0.7299178242683411)
    assert get_atom("BOF4S-32").values[0] == np.float32(-0.8732797503471375)
    assert get_atom("BOF4S-256").values[14] == np.float32(0.7418596744537354)
    assert get_atom("BOF4SMAE-64").values[0] == np.float32(-0.8018798232078552)
    for block, values in codebooks.BOF4S_MSE.items():
        atom = get_atom(f"BOF4S-{block}")
        assert atom.signed_scale and atom.values[-1] == 1.0 and 0.0 in atom.values
        assert sum(v < 0 for v in values) == 7 and sum(v > 0 for v in values) == 8


@pytest.mark.parametrize("name", known_atom_names())
def test_registry_invariants(name):
    atom = get_atom(name)
    v = np.asarray(atom.values)
    assert np.all(np.diff(v) > 0), "sorted and unique"
    assert np.all(v.astype(np.float32) == v), "exact float32 values"
    assert atom.code_bits == math.ceil(math.log2(len(set(atom.codes)))) or atom.kind is AtomKind.FLOAT
    assert 0.0 in atom.values or atom.name == "SH4"  # SH4: mid-rise guess, no zero
    assert atom.source


@pytest.mark.parametrize("name", [n for n in known_atom_names() if get_atom(n).kind is not AtomKind.FLOAT])
def test_codebook_nearest_equals_brute_force(name):
    atom = get_atom(name)
    v = np.asarray(atom.values, dtype=np.float32)
    y = np.random.default_rng(1).uniform(-1.3 * atom.qmax, 1.3 * atom.qmax, 200_000).astype(np.float32)
    dist = np.abs(y[:, None].astype(np.float64) - v[None, :])
    nearest2 = np.sort(dist, axis=1)[:, :2]
    y = y[nearest2[:, 0] < nearest2[:, 1]]  # exact ties follow the tie rule, tested elsewhere
    brute = np.abs(y[:, None].astype(np.float64) - v[None, :]).argmin(axis=1)
    np.testing.assert_array_equal(atom.table.index(y), brute)


def test_unknown_atom_suggests_close_names():
    with pytest.raises(UnknownFormatError, match="did you mean NF4"):
        get_atom("NF5")


def test_user_codebook_registers_and_quantizes():
    atom = register_codebook("vendor7", [-1, -0.5, 0, 0.25, 0.5, 1.0, 0.75], "test vendor grid")
    assert atom.name == "VENDOR7" and atom.code_bits == 3 and get_atom("vendor7") is atom
    np.testing.assert_array_equal(atom.table.round(np.array([0.3, -0.8, 0.9], np.float32)), [0.25, -1.0, 1.0])
    with pytest.raises(UnknownFormatError):
        register_codebook("NF4", [0, 1])


def test_ue8m0_matches_ml_dtypes():
    codes, values = _oracle_values("float8_e8m0fnu", 8)
    np.testing.assert_array_equal(get_scale("UE8M0").magnitudes, np.sort(values))


def test_e4m3_scale_is_the_positive_half_of_e4m3():
    atom = get_atom("E4M3")
    np.testing.assert_array_equal(get_scale("E4M3").magnitudes, [v for v in atom.values if v >= 0])
    assert get_scale("E4M3").bits == 8 and get_scale("E4M3").signed


def test_ue4m4_assumed_encoding():
    """Bias 7, subnormals, all 256 codes finite (docs/formats.md §2.1): max 1.9375*2**8, min 2**-10."""
    s = get_scale("UE4M4")
    assert s.bits == 8 and s.max == 496.0 and s.min_positive == 2.0**-10
    assert s.magnitudes.size == 256 and not s.signed


@pytest.mark.parametrize("name", BUILTIN_SCALES)
def test_scale_bits(name):
    s = get_scale(name)
    expected = {"UE8M0": 8, "UE4M4": 8, "UE4M3": 7, "UE5M3": 8, "UE3M5": 8, "UE5M7": 12,
                "E4M3": 8, "S1E5M5": 12, "E8M7": 16, "FP16": 16, "FP32": 32}[name]
    assert s.bits == expected


def test_fp16_scale_is_numpy_float16():
    """Every finite non-negative binary16 value, code for code (numpy's float16 as the oracle)."""
    every = np.arange(1 << 15, dtype=np.uint16).view(np.float16).astype(np.float64)
    np.testing.assert_array_equal(get_scale("FP16").magnitudes, np.unique(every[np.isfinite(every)]))
