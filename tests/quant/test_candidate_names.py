"""Any text as a candidate name: either a candidate that prints canonically and parses back to
itself, with finite positive bits, or one short error line; through the CLI, exit 0 or 2."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dse.cli import main
from quant import parse_candidate
from quant.errors import DseError

PIECES = [
    "E2M1", "E2M3", "E3M2", "E4M3", "E8M1", "E8M7", "NF4", "DD4", "INT4", "INT8", "BOF4S", "BOF4", "SH4", "|",
    "s", "S", "UE4M4", "UE8M0", "S1E5M5", "FP32", "@", "16", "32", "64", "256", "0", "layer", "\u00b2",
    "\u0663", ":", "ceil", "floor", "nearest", "mse", "4o6", "signed", "absmax", "tfp32", "tpot", "tnone",
    "selbit", "selsign", "selmeta", "aw", "lut=E4M3", "lut=", "+", "opq(", "res(", "0.95", "0.5", "%", "1e9",
    "1e-5", "nan", "inf", "-1", "1_0", "1e999", ",", "blockidx", ")", " ", "\u00e9", "0.99999999",
    "Q4", "Q5", "FP16", "ggml", "NVFP4", "MXFP4", "MXFP6", "Q4_0", "Q8_0", "IF4", "SFP4", "E2M1~0.25",
]


def _number() -> st.SearchStrategy[str]:
    """Decimal spellings a user might write (never with '+': it separates corrections)."""
    x = st.floats(min_value=1e-9, max_value=99.9, allow_nan=False, allow_infinity=False)
    return st.one_of(x.map(repr), x.map(lambda v: f"{v:.3e}".replace("e+", "e")), x.map(lambda v: f"{v:.9f}"))


@st.composite
def plausible_names(draw) -> str:
    """Valid-looking names with arbitrary numbers in their corrections (the printing risk)."""
    core = draw(st.sampled_from(["E2M1sE4M3", "NF4sFP32@256", "E2M3sUE4M4@64", "NF4|DD4sUE4M4@64", "NVFP4", "Q4_0",
                                 "MXFP6_E2M3", "SFP4sE4M3", "E2M1|INT4sE4M3"]))
    opts = draw(st.lists(st.sampled_from([":aw", ":ceil", ":mse", ":signed", ":tnone"]), max_size=2))
    corr = []
    if draw(st.booleans()):
        corr.append(f"+opq(0.{draw(st.integers(1, 10**12))}{draw(st.sampled_from(['', ',24', ',blockidx']))})")
    if draw(st.booleans()):
        corr.append(f"+res({draw(_number())}%{draw(st.sampled_from(['', ',24', ',33.5', ',blockidx']))})")
    return core + "".join(opts) + "".join(corr)


any_name = st.one_of(st.lists(st.sampled_from(PIECES), max_size=14).map("".join), st.text(max_size=40),
                     plausible_names())


def _check(name: str) -> None:
    try:
        c = parse_candidate(name)
    except DseError as err:
        message = str(err)
        assert "\n" not in message and len(message) < 500
        return
    again = parse_candidate(c.name)
    assert again == c and again.name == c.name
    bits = c.bits(4096 * 4096, 1000 if (c.outliers or c.residual) else 0)
    assert math.isfinite(bits.bpw) and bits.bpw > 0


@settings(max_examples=600, deadline=None)
@given(any_name)
def test_every_accepted_name_prints_canonically_and_parses_back(name):
    _check(name)


@pytest.mark.parametrize("name", [
    "E2M1sE4M3+res(1%,1000)", "E2M1sE4M3+res(0.57%)", "E2M1sE4M3+res(1e-9%,1e3)", "E2M1sE4M3+res(1e-7%)", "NF4sFP32@256+opq(0.99999999)",
    "E2M1sE4M3+res(33.333333333333336%)", "E2M1sE4M3+res(1%,33.3)",
])
def test_numbers_print_exactly(name):
    c = parse_candidate(name)
    assert parse_candidate(c.name) == c


@pytest.mark.parametrize(("name", "text"), [
    ("E2M1sE4M3+res(50%,-1000)", "finite decimal"),
    ("E2M1sE4M3+res(0.5%,nan)", "finite decimal"),
    ("E2M1sE4M3+opq(0.9,inf)", "finite decimal"),
    ("E2M1sE4M3+res(0.5%,1e999)", "finite decimal"),
    ("E2M1sE4M3+res(0.5%,0.5)", r"\[1, 1024\]"),
    ("E2M1sE4M3+res(\u0663%)", "finite decimal"),
    ("E2M1sE4M3@\u00b2", "ASCII digits"),
    ("E2M1sE4M3@\u0663\u0662", "ASCII digits"),
    ("E8M1sE4M3", "float32"),
    ("E2M1sE4M3:ceil:floor", "scale rule given twice"),
    ("E2M1sE4M3:aw:aw", "aw given twice"),
    ("E2M1sE4M3+res(1%)+res(2%)", "given twice"),
    ("E2M1sE4M3+opq(0.9)+opq(0.95)", "given twice"),
])
def test_values_the_checks_used_to_let_through(name, text):
    with pytest.raises(DseError, match=text) as info:
        parse_candidate(name)
    assert "\n" not in str(info.value)


def test_a_huge_name_is_quoted_briefly():
    with pytest.raises(DseError) as info:
        parse_candidate("E2M1sE4M3:" + "x" * 1_000_000)
    assert len(str(info.value)) < 500


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=any_name)
def test_no_name_makes_a_command_raise(name, capsys):
    """Through main(): exit 0, or 2 with exactly one error line; never an exception."""
    for argv in (["cost", "--hardware", "lpddr5x", "--", name],
                 ["measure", "--weights", "synthetic:gaussian", "--shape", "8x256", "--json", "--", name]):
        status = main(argv)
        err = capsys.readouterr().err
        if status == 0:
            assert err == ""
        else:
            assert status == 2 and err.count("\n") == 1 and err.startswith("dse: error: "), (argv, err)
