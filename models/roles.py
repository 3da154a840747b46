"""Tensor roles: one vocabulary for the weight names of HF, GGUF, BERT (MiniLM) and CTranslate2 (Whisper).

A role says what a matrix does in the network, whatever the checkpoint calls it::

    HF (Llama/Qwen/...)                 GGUF (llama.cpp)      MiniLM (BERT)                role
    model.layers.0.self_attn.q_proj     blk.0.attn_q          attention.self.query         q
    model.layers.0.self_attn.o_proj     blk.0.attn_output     attention.output.dense       o
    model.layers.0.mlp.up_proj          blk.0.ffn_up          intermediate.dense           up
    model.layers.0.mlp.down_proj        blk.0.ffn_down        output.dense                 down
    ...experts.3.w1 / experts.3.gate_proj   blk.3.ffn_gate_exps[3]                         expert_gate

GGUF names follow llama.cpp's ``gguf-py/gguf/constants.py`` (``MODEL_TENSOR`` names); HF names follow
the checkpoints' ``model.safetensors.index.json`` on the Hugging Face hub. Shared experts
(DeepSeek-V3) are dense FFNs that run for every token, so they take the plain ``gate``/``up``/``down``
roles.
"""

from __future__ import annotations

import re
from typing import NamedTuple

ROLES = (
    "q", "k", "v", "o", "qkv", "kv", "gate", "up", "gate_up", "down", "embed", "lm_head", "router",
    "expert_gate", "expert_up", "expert_down", "q_a", "q_b", "kv_a", "kv_b", "other",
)
"""Every role a tensor can have; ``kv`` is a fused K|V projection (Whisper cross-attention)."""

# Last name component (without ".weight") -> role. One table for all naming schemes.
_LEAF_ROLES = {
    # HF decoder names
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "qkv_proj": "qkv",
    "gate_proj": "gate", "up_proj": "up", "down_proj": "down", "gate_up_proj": "gate_up",
    "embed_tokens": "embed", "lm_head": "lm_head",
    "q_a_proj": "q_a", "q_b_proj": "q_b", "kv_a_proj_with_mqa": "kv_a", "kv_b_proj": "kv_b",
    # Mixtral experts: w1 = gate, w3 = up, w2 = down (transformers' MixtralSparseMoeBlock)
    "w1": "gate", "w3": "up", "w2": "down",
    # GGUF
    "token_embd": "embed", "output": "lm_head", "attn_q": "q", "attn_k": "k", "attn_v": "v",
    "attn_output": "o", "attn_qkv": "qkv", "ffn_gate": "gate", "ffn_up": "up", "ffn_down": "down",
    "ffn_gate_inp": "router", "ffn_gate_exps": "expert_gate", "ffn_up_exps": "expert_up",
    "ffn_down_exps": "expert_down", "ffn_gate_shexp": "gate", "ffn_up_shexp": "up",
    "ffn_down_shexp": "down", "attn_q_a": "q_a", "attn_q_b": "q_b", "attn_kv_a_mqa": "kv_a",
    "attn_kv_b": "kv_b", "attn_k_b": "kv_b", "attn_v_b": "kv_b",
    # GPT-2 (Conv1D modules; models/layouts.py reads them as (out, in))
    "c_attn": "qkv", "q_attn": "q", "c_fc": "up",
    # BERT (MiniLM)
    "query": "q", "key": "k", "value": "v", "word_embeddings": "embed",
    "position_embeddings": "embed", "token_type_embeddings": "embed",
}
_EXPERT_ROLE = {"gate": "expert_gate", "up": "expert_up", "down": "expert_down"}

# Names whose role is given by two components (BERT "intermediate.dense", CTranslate2 "ffn/linear_0").
_PAIR_ROLES = {
    ("intermediate", "dense"): "up", ("output", "dense"): "down", ("attention.output", "dense"): "o",
    ("self_attention", "linear_0"): "qkv", ("self_attention", "linear_1"): "o",
    ("attention", "linear_0"): "q", ("attention", "linear_1"): "kv", ("attention", "linear_2"): "o",
    ("ffn", "linear_0"): "up", ("ffn", "linear_1"): "down", ("decoder", "embeddings"): "embed",
    ("attn", "c_proj"): "o", ("mlp", "c_proj"): "down",
}

_LAYER = re.compile(r"(?:^|[./])(?:layers|layer|blk|h)[._/]?(\d+)(?:[./]|$)")
_EXPERT = re.compile(r"(?:experts[./](\d+|\*)[./])|(?:\[(\d+)\]$)")
"""Expert index: HF ``experts.7.`` (``*`` in catalog name patterns) or an expanded GGUF ``name[7]``."""
_SUFFIX = re.compile(r"([./](weight|bias))?(\[\d+\])?$")


class TensorKey(NamedTuple):
    """Where a tensor sits in the network: role, decoder layer (None outside layers) and expert."""

    role: str
    layer: int | None
    expert: int | None


def parse_name(name: str) -> TensorKey:
    """The (role, layer, expert) of a weight name in any of the supported naming schemes."""
    layer_match = _LAYER.search(name)
    expert_match = _EXPERT.search(name)
    index = (expert_match.group(1) or expert_match.group(2)) if expert_match else None
    expert = int(index) if index is not None and index.isdigit() else None
    return TensorKey(_role(name, expert_match is not None), int(layer_match.group(1)) if layer_match else None, expert)


def role_of(name: str) -> str:
    """Role of a weight tensor from its name (HF, GGUF, MiniLM/BERT or CTranslate2); "other" if unknown."""
    return parse_name(name).role


def _role(name: str, is_expert: bool) -> str:
    parts = re.split(r"[./]", _SUFFIX.sub("", name))
    leaf = parts[-1]
    if len(parts) >= 2:
        # "attention.output.dense" must win over the generic "output.dense" (= down)
        pair = _PAIR_ROLES.get((".".join(parts[-3:-1]), leaf)) or _PAIR_ROLES.get((parts[-2], leaf))
        if pair is not None:
            return pair
    role = _LEAF_ROLES.get(leaf)
    if role is None:
        # routers: Mixtral "block_sparse_moe.gate", DeepSeek "mlp.gate"
        return "router" if leaf == "gate" and len(parts) >= 2 and parts[-2] in ("mlp", "block_sparse_moe") else "other"
    if is_expert and ".shared_experts." not in name:
        return _EXPERT_ROLE.get(role, role)
    return role
