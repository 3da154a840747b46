"""The numpy decoder on HF safetensors checkpoints (Qwen2, Mistral) against HF transformers.

The oracles (tests/models/data/make_hf_decoder_oracles.py) are tiny random models built and run
by transformers' own Qwen2ForCausalLM and MistralForCausalLM; here they are read by our loader.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.errors import SourceError
from models.forward import blas_threads, log_softmax
from models.llama import LlamaModel, load_decoder

DATA = Path(__file__).with_name("data")
MODELS = ["qwen2-tiny", "mistral-tiny"]
KL_TOL = 1e-8
"""nats/token: measured 6e-13 (Qwen2) and 2e-12 (Mistral); the subtlest defect below gives 2e-2."""
LOGP_TOL = 1e-3
"""nats: measured 6e-6 (Qwen2) and 8e-6 (Mistral); the subtlest defect below gives 1.2."""


def _kl_and_gap(name, model, overrides=None):
    """Mean KL(oracle || ours) in nats/token, max |log-prob difference| in nats, and top-1 agreement
    (tokens,) bool of ``model`` (with ``overrides``) on the oracle's ids."""
    oracle = np.load(DATA / f"{name}.npz")
    with blas_threads():
        logits = model.forward(oracle["ids"][None], overrides)[0][0]
    mine, ref = log_softmax(logits.astype(np.float64)), oracle["logp"]  # float64: exactly normalized, KL >= 0
    kl = np.sum(np.exp(ref) * (ref - mine), axis=1)
    return kl.mean(), np.abs(ref - mine).max(), mine.argmax(axis=1) == ref.argmax(axis=1)


@pytest.mark.parametrize("name", MODELS)
def test_hf_checkpoint_matches_transformers_oracle(name):
    """Our loader (config.json, safetensors matrices and 1-D tensors) and forward against
    transformers on the same float32 weights; they differ only by summation order. Measured mean KL
    6e-13 / 2e-12 nats/token and max |log-prob difference| 6e-6 / 8e-6 nats (Qwen2 / Mistral,
    24 tokens, full vocabulary). The tolerances (KL 1e-8, log-probs 1e-3) leave room for other BLAS
    builds and stay orders of magnitude below every defect in the next test (KL >= 2e-2)."""
    model = load_decoder(DATA / name)
    assert model.config.rope_theta == 1e6  # transformers 5 writes it under rope_parameters
    kl, gap, top1 = _kl_and_gap(name, model)
    assert top1.all()
    assert kl < KL_TOL
    assert gap < LOGP_TOL


def _rebuilt(model, **changes):
    return LlamaModel(replace(model.config, **changes), model.weights, model.tokenizer, gguf=False, label="defect")


DEFECTS = {
    "q/k/v biases dropped": lambda m: (m, {n: 0 * w for n, w in m.weights.items() if n.endswith(".bias")}),
    "k bias dropped": lambda m: (m, {n: 0 * w for n, w in m.weights.items() if n.endswith("k_proj.bias")}),
    "RoPE on adjacent pairs": lambda m: (_rebuilt(m, rope_interleaved=True), {}),
    "default rope_theta 1e4": lambda m: (_rebuilt(m, rope_theta=10000.0), {}),
}
"""Defect -> (model, overrides) built from the correct model."""


@pytest.mark.parametrize("name,defect", [("qwen2-tiny", d) for d in DEFECTS] +
                         [("mistral-tiny", d) for d in DEFECTS if "bias" not in d])
def test_a_defect_is_far_above_the_tolerances(name, defect):
    """Measured: biases dropped KL 3.5, k bias alone 0.017 (it shifts scores only through RoPE),
    adjacent-pair RoPE 0.35 / 1.3, rope_theta 1e4 0.14 / 0.54 nats/token (Qwen2 / Mistral)."""
    model, overrides = DEFECTS[defect](load_decoder(DATA / name))
    kl, gap, _ = _kl_and_gap(name, model, overrides)
    assert kl > 1e5 * KL_TOL
    assert gap > 100 * LOGP_TOL


def test_scaled_rope_is_a_one_line_error(tmp_path):
    """transformers 5 puts the scaling type in rope_parameters; it must not be read as plain RoPE."""
    cfg = json.loads((DATA / "qwen2-tiny" / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SourceError, match="yarn.*plain RoPE only") as err:
        load_decoder(tmp_path)
    assert "\n" not in str(err.value)
