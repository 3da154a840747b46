"""One role vocabulary across HF, GGUF, MiniLM (BERT) and CTranslate2 names."""

import pytest

from models.roles import parse_name, role_of

CASES = [
    # HF
    ("model.layers.3.self_attn.q_proj.weight", "q", 3, None),
    ("model.layers.3.self_attn.o_proj.weight", "o", 3, None),
    ("model.layers.3.mlp.gate_up_proj.weight", "gate_up", 3, None),
    ("model.layers.7.block_sparse_moe.gate.weight", "router", 7, None),
    ("model.layers.7.block_sparse_moe.experts.5.w2.weight", "expert_down", 7, 5),
    ("model.layers.9.mlp.experts.255.up_proj.weight", "expert_up", 9, 255),
    ("model.layers.9.mlp.shared_experts.down_proj.weight", "down", 9, None),
    ("model.layers.9.self_attn.kv_a_proj_with_mqa.weight", "kv_a", 9, None),
    ("model.embed_tokens.weight", "embed", None, None),
    ("lm_head.weight", "lm_head", None, None),
    # GGUF
    ("blk.12.attn_q.weight", "q", 12, None),
    ("blk.12.attn_output.weight", "o", 12, None),
    ("blk.12.ffn_down.weight", "down", 12, None),
    ("blk.4.ffn_gate_exps.weight[3]", "expert_gate", 4, 3),
    ("blk.4.ffn_gate_inp.weight", "router", 4, None),
    ("token_embd.weight", "embed", None, None),
    ("output.weight", "lm_head", None, None),
    ("output_norm.weight", "other", None, None),
    # GPT-2 (Conv1D) and fused experts in safetensors
    ("transformer.h.5.attn.c_attn.weight", "qkv", 5, None),
    ("h.5.attn.c_proj.weight", "o", 5, None),
    ("h.5.mlp.c_fc.weight", "up", 5, None),
    ("h.5.mlp.c_proj.weight", "down", 5, None),
    ("model.layers.2.mlp.experts.down_proj[7]", "expert_down", 2, 7),
    # MiniLM / BERT
    ("encoder.layer.2.attention.self.value.weight", "v", 2, None),
    ("encoder.layer.2.attention.output.dense.weight", "o", 2, None),
    ("encoder.layer.2.intermediate.dense.weight", "up", 2, None),
    ("encoder.layer.2.output.dense.weight", "down", 2, None),
    ("embeddings.word_embeddings.weight", "embed", None, None),
    ("pooler.dense.weight", "other", None, None),
    # CTranslate2 Whisper
    ("encoder/layer_1/self_attention/linear_0/weight", "qkv", 1, None),
    ("decoder/layer_5/attention/linear_1/weight", "kv", 5, None),
    ("decoder/layer_5/ffn/linear_1/weight", "down", 5, None),
    ("decoder/embeddings/weight", "embed", None, None),
]


@pytest.mark.parametrize(("name", "role", "layer", "expert"), CASES)
def test_parse_name(name, role, layer, expert):
    assert tuple(parse_name(name)) == (role, layer, expert)
    assert role_of(name) == role


def test_the_same_matrix_gets_the_same_key_in_hf_and_gguf():
    pairs = [("model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight"),
             ("model.layers.1.block_sparse_moe.experts.2.w1.weight", "blk.1.ffn_gate_exps.weight[2]"),
             ("model.embed_tokens.weight", "token_embd.weight")]
    for hf, gguf in pairs:
        assert parse_name(hf) == parse_name(gguf)
