"""``dse models``: the shape catalog through main(), as a user runs it."""

from __future__ import annotations

import json

from dse.cli import main
from models.catalog import get_model, list_models


def test_models_json_lists_every_model_with_exact_counts(capsys):
    assert main(["models", "--json"]) == 0
    records = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(records) == list_models()
    llama = records["llama-3.1-8b"]
    assert llama["params"] == 8_030_261_248 and llama["decoder_linear_params"] == 6_979_321_856
    assert llama["linear_tensors"] == 226 and llama["layers"] == 32 and llama["family"] == "llama"
    assert records["mixtral-8x7b"]["active_params"] == 12_879_925_248


def test_models_table_has_units_in_headers(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "[B]" in out and "deepseek-v3" in out and "smollm2-135m" in out


def test_one_model_lists_its_tensors(capsys):
    assert main(["models", "Qwen3-4B", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["tensors"]) == len(get_model("qwen3-4b").tensors)
    q = next(t for t in record["tensors"] if t["name"] == "model.layers.0.self_attn.q_proj.weight")
    assert (q["out_features"], q["in_features"], q["role"], q["layer"]) == (4096, 2560, "q", 0)
    assert main(["models", "phi-3-mini-4k"]) == 0
    assert "gate_up" in capsys.readouterr().out


def test_unknown_model_exits_2_with_suggestions(capsys):
    assert main(["models", "mistral-7b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dse: error: unknown model 'mistral-7b'") and "mistral-7b-v0.3" in err
    assert err.count("\n") == 1
