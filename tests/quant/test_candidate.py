"""Candidate names parse and print both ways; bit counts equal an independent count."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quant
from quant import parse_candidate, quantize
from quant.candidate import ScaleRule, TensorScale
from quant.errors import CandidateError, UnknownFormatError

ATOMS = ["E2M1", "E2M3", "E3M2", "E4M3", "E5M2", "INT4", "INT8", "NF4", "BOF4-64", "BOF4S-32", "E3M3", "E1M2",
         "SH4", "SPLIT87", "DD4", "NF4|DD4", "E2M1|INT4", "BOF4S-16|DD4", "E2M3|E3M2",
         "SFP4", "E2M1|E2M1~0.5|E2M1~-0.5", "DD4|DD4", "NF4|DD4|E2M1|INT4|SH4", "INT4~-0.5"]
SCALES = ["UE8M0", "UE4M4", "UE4M3", "UE5M7", "E4M3", "S1E5M5", "FP32", "E8M7"]
WIDE = ("UE8M0", "FP32", "E8M7")
BLOCKS = ["", "@8", "@16", "@32", "@64", "@layer"]


@st.composite
def candidate_names(draw) -> str:
    block = draw(st.sampled_from(BLOCKS))
    # at most one option of each kind: a repeated kind (:ceil:floor) is an error, not "the last wins"
    rules = ["nearest", "ceil", "floor"] + (["mse", "4o6"] if block != "@layer" else [])
    opts = [o for o in (draw(st.sampled_from(["", *rules])), draw(st.sampled_from(["", "signed", "absmax"])),
                        draw(st.sampled_from(["", "tfp32", "tpot", "tnone"])) if block != "@layer" else "") if o]
    scale = draw(st.sampled_from(SCALES))
    if scale in WIDE:
        opts = [o for o in opts if o not in ("tfp32", "tpot")]
    atoms = draw(st.sampled_from(ATOMS))
    grids = {"SFP4": "E2M1|E2M1~0.25|E2M1~-0.25"}.get(atoms, atoms).split("|")  # SFP4 names a grid set
    if len(grids) > 1 and block != "@layer":
        opts.append("selbit")
    elif len(grids) > 1:  # a set picks a grid per block: no sets with one scale per layer
        atoms = grids[0]
    opts += [o for o in (draw(st.sampled_from(["", "aw"])), draw(st.sampled_from(["", "lut=E4M3", "lut=E5M2"]))) if o]
    corrections = draw(st.lists(st.sampled_from(["+res(0.5%)", "+res(1.25%,24)"]), max_size=1))
    if block in ("", "@16", "@32", "@64"):  # smaller blocks cannot reach these OPQ thresholds
        corrections += draw(st.lists(st.sampled_from(["+opq(0.95)", "+opq(0.99,blockidx)"]), max_size=1))
    if len({c.split(",")[-1] for c in corrections}) > 1:
        corrections = corrections[:1]
    name = "".join([atoms + "s" + scale + block, *(f":{o}" for o in opts), *corrections])
    return name.lower() if draw(st.booleans()) else name


@settings(deadline=None)  # the first parse of a scale builds (and caches) its value table
@given(candidate_names())
def test_parse_print_round_trip(name):
    c = parse_candidate(name)
    assert parse_candidate(c.name) == c
    assert parse_candidate(c.name.lower()) == c
    assert c.name == parse_candidate(c.name).name


@pytest.mark.parametrize(("name", "bpw"), [
    ("E2M3sUE4M4", 6.5),          # SOP headline format (docs/formats.md §2.3)
    ("E2M1sE4M3@16", 4.5),        # NVFP4
    ("E2M1sUE8M0@32", 4.25),      # MXFP4
    ("E2M3sUE8M0@32", 6.25),      # MXFP6
    ("E4M3sUE8M0@32", 8.25),      # MXFP8
    ("NF4sFP32@64", 4.5),         # bitsandbytes NF4 without double quant
    ("E2M3sS1E5M5", 6.75),        # 6-bit atom + 12-bit scale, g = 16
    ("E4M3sUE8M0@layer", 8.0),    # per-layer POT FP8 baseline
    ("BOF4S-32sUE4M4@32", 4 + 8 / 32 + 1 / 32),  # signed absmax on an unsigned scale: +1 sign bit
    ("BOF4S-32sE4M3@32", 4 + 8 / 32),            # ... free in E4M3's sign bit
])
def test_nominal_bpw(name, bpw):
    assert parse_candidate(name).nominal_bpw == pytest.approx(bpw, abs=1e-12)


def test_per_tensor_constants():
    assert parse_candidate("E4M3sUE8M0@layer").bits(1000).bpw == 8.0 + 8 / 1000
    assert parse_candidate("E2M3sUE4M4").bits(1000).bpw == 6.5 + 32 / 1000  # FP32 tensor factor
    assert parse_candidate("E2M3sUE4M4:tpot").bits(1000).bpw == 6.5 + 8 / 1000
    assert parse_candidate("E2M1sUE8M0@32").bits(1000).tensor_bits == 0


@pytest.mark.parametrize("name", ["E2M3sUE4M4", "E2M1sE4M3@16:4o6", "NF4sFP32@64", "E4M3sUE8M0@layer",
                                  "BOF4S-32sUE4M4@32", "INT4sUE8M0@8"])
def test_bits_equal_what_quantize_stores(name):
    """Independent count: code width x codes + scale width x stored scales + sign bits + constants."""
    c = parse_candidate(name)
    w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    q = quantize(w, c)
    n_scales = 1 if c.block_size is None else q.scales.size  # @layer: one scale, broadcast per row
    assert np.unique(q.scales).size == 1 or c.block_size is not None
    stored = c.atom.code_bits * q.codes.size + c.scale.bits * n_scales
    if c.block_size is not None:
        stored += q.scales.size * (c.signed and not c.scale.signed)
        stored += {TensorScale.NONE: 0, TensorScale.FP32: 32, TensorScale.POT: 8}[c.tensor_scale]
    assert c.bits(w.size).total_bits == pytest.approx(stored)


def test_defaults():
    assert parse_candidate("E2M1sUE8M0@32").rule is ScaleRule.FLOOR  # OCP MX rule for POT scales
    assert parse_candidate("E4M3sUE8M0@layer").rule is ScaleRule.CEIL
    assert parse_candidate("E2M3sUE4M4").tensor_scale is TensorScale.FP32
    assert parse_candidate("BOF4S-32sUE4M4@32").signed
    assert parse_candidate("bof4ssue4m4@32").atom.name == "BOF4S-32"  # BOF4S = block-matched table


@pytest.mark.parametrize(("name", "error", "text"), [
    ("NF5sFP32", UnknownFormatError, "did you mean NF4"),
    ("E2M3sUF4M4", UnknownFormatError, "did you mean"),
    ("E2M3UE4M4", CandidateError, "ATOMsSCALE"),
    ("E2M3sUE4M4@0", CandidateError, "positive integer"),
    ("E2M3sUE4M4:fast", CandidateError, "unknown option"),
    ("E4M3sUE4M4@layer:tfp32", CandidateError, "already per tensor"),
    ("E4M3sUE8M0@layer:mse", CandidateError, "work per block"),
    ("|".join(["E2M1"] * 17) + "sE4M3", CandidateError, "at most 16 grids"),
    ("E2M1~0.1sE4M3", UnknownFormatError, "not exact in float32"),
    ("DD4~0.5sE4M3", UnknownFormatError, "only a fixed"),
    ("NF4|E2M3sUE4M4", CandidateError, "same code width"),
    ("NF4|E2M1sE4M3:selsign", CandidateError, "symmetric grids"),
    ("E2M1|INT4sUE4M4:selmeta", CandidateError, "metabit"),
    ("NF4sUE4M4:selbit", CandidateError, "needs a grid set"),
    ("NF4sUE4M4+opq(1.5)", CandidateError, "in \\(0, 1\\)"),
    ("NF4sUE4M4+res(0.5)", CandidateError, "percentage"),
    ("NF4sUE4M4+magic(3)", CandidateError, "unknown correction"),
    ("BOF4sUE4M4@32", CandidateError, "no table for block 32"),
    ("NF4sUE4M4+opq(0.999)", CandidateError, "can exceed 3.75"),  # Samuelson bound at block 16
    ("E2M1sUE8M0@32:tpot", CandidateError, "drop :tpot"),
])
def test_bad_names_fail_with_one_line(name, error, text):
    with pytest.raises(error, match=text) as info:
        parse_candidate(name)
    assert "\n" not in str(info.value)


def test_cached_hash_equals_field_hash_and_is_not_pickled() -> None:
    """Candidate hashes once per instance; the cached hash (str hashes are per process) never
    travels in a pickle, and an unpickled or equal candidate hashes as a fresh one."""
    c = parse_candidate("NF4|DD4sUE4M4:aw+res(0.5%)")
    fresh = parse_candidate(c.name)
    assert hash(c) == hash(fresh) == hash(tuple(getattr(c, f.name) for f in dataclasses.fields(c)))
    data = pickle.dumps(c)
    assert "_hash" not in pickle.loads(data).__dict__
    script = ("import pickle, sys; c = pickle.loads(sys.stdin.buffer.read()); "
              "from quant import parse_candidate; print(hash(c) == hash(parse_candidate(c.name)) and c == parse_candidate(c.name))")
    root = str(Path(quant.__file__).parents[1])
    out = subprocess.run([sys.executable, "-c", script], input=data, capture_output=True, check=True,
                         env={**os.environ, "PYTHONPATH": root})
    assert out.stdout.strip() == b"True"
