"""Industry aliases, and llama.cpp's Q4_0/Q5_0/Q8_0 against the gguf package's own quantizers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import aliases, dequantize, measure, parse_candidate, quantize, reconstruction_error
from quant.errors import CandidateError

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as GT  # noqa: E402
from gguf import quants  # noqa: E402

GGML = {"Q4_0": GT.Q4_0, "Q5_0": GT.Q5_0, "Q8_0": GT.Q8_0}


def _gguf_roundtrip(w: np.ndarray, name: str) -> np.ndarray:
    return quants.dequantize(quants.quantize(w, GGML[name]), GGML[name])


@pytest.mark.parametrize("alias", [a.name for a in aliases.ALIASES])
def test_every_alias_parses_to_its_canonical_candidate(alias: str) -> None:
    a = aliases.lookup(alias)
    assert a is not None
    c = parse_candidate(alias)
    assert c.name == a.canonical  # the canonical name is printed canonically
    assert parse_candidate(c.name) == c
    assert alias in aliases.aliases_of(c.name)


def test_alias_bits_are_the_published_ones() -> None:
    n = 1 << 20
    expected = {"NVFP4": 4.5, "MXFP4": 4.25, "MXFP6_E2M3": 6.25, "MXFP8_E5M2": 8.25, "NF4": 4.5,
                "IF4": 4.5, "Q4_0": 4.5, "Q5_0": 5.5, "Q8_0": 8.5, "FP8": 8.0}
    for alias, bpw in expected.items():
        assert parse_candidate(alias).bits(n).block_bpw == bpw, alias


@pytest.mark.parametrize("spelling", ["mxfp6-e2m3", "MXFP6 E2M3", "Mxfp6_E2m3"])
def test_alias_spellings(spelling: str) -> None:
    assert parse_candidate(spelling).name == "E2M3sUE8M0@32"


def test_family_names_and_typos_suggest_aliases() -> None:
    with pytest.raises(CandidateError, match="MXFP6_E2M3 or MXFP6_E3M2"):
        parse_candidate("MXFP6")
    with pytest.raises(CandidateError, match="NVFP4"):
        parse_candidate("NVFP5")
    with pytest.raises(CandidateError, match=":ggml reproduces"):
        parse_candidate("E2M1sFP16@32:ggml:tnone")


def _weights(seed: int, rows: int, cols: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_t(4, (rows, cols)).astype(np.float32) * np.float32(0.02)
    w[0, :32] = 0.0  # an all-zero block: ggml's d = 0 path
    w[1, 5] = w[1, 7] = np.float32(0.5)  # a tied block maximum
    w[1, 9] = np.float32(-0.5)
    w[2, 40:72] = np.float32(1e-9)  # a scale below FP16's range
    return w


@pytest.mark.parametrize("name", sorted(GGML))
def test_ggml_formats_match_gguf_bit_for_bit(name: str) -> None:
    w = _weights(0, 96, 512)
    c = parse_candidate(name)
    reference = _gguf_roundtrip(w, name)
    q = quantize(w, c, threads=2)
    ours = dequantize(q)
    assert ours.view(np.uint32).tolist() == reference.view(np.uint32).tolist()
    # measure's error is the error of gguf's reconstruction, summed in measure's order
    ours_stats, theirs = measure(w, c, threads=2), reconstruction_error(w, reference, 32)
    assert (ours_stats.sum_d2, ours_stats.rel_mse, ours_stats.cos_deficit_ppm) == (
        theirs.sum_d2, theirs.rel_mse, theirs.cos_deficit_ppm)
    if name != "Q8_0":  # the stored nibbles are ggml's codes
        packed = quants.quantize(w, GGML[name]).reshape(-1, 18 if name == "Q4_0" else 22)
        low = packed[:, -16:]
        nibbles = np.concatenate([low & 0x0F, low >> 4], axis=1)
        assert np.array_equal(nibbles & 0x0F, q.codes.reshape(-1, 32) & 0x0F)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(sorted(GGML)), st.floats(1e-6, 1e3))
def test_ggml_matches_gguf_on_random_scales(seed: int, name: str, scale: float) -> None:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 64)) * scale).astype(np.float32)
    ours = dequantize(quantize(w, parse_candidate(name), threads=1))
    assert ours.view(np.uint32).tolist() == _gguf_roundtrip(w, name).view(np.uint32).tolist()
