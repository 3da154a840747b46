"""Built-in shape catalog: the exact linear-layer shapes of open LLM families.

Every number comes from the model's Hugging Face ``config.json`` (``ModelSpec.source`` links it):
``hidden_size``, ``intermediate_size``, ``num_hidden_layers``, ``num_attention_heads``,
``num_key_value_heads``, ``head_dim``, ``vocab_size``, ``tie_word_embeddings`` and the MoE/MLA
fields. Shapes are PyTorch ``nn.Linear.weight`` shapes ``(out_features, in_features)`` under their
Hugging Face names. Easy mistakes are avoided by construction:

* q_proj width is ``heads * head_dim`` and o_proj is ``(hidden, heads * head_dim)``, with the
  config's head_dim (Gemma-3 256, Qwen3-4B 128), never ``hidden / heads`` by assumption;
* Phi-3 keeps its fused ``qkv_proj`` / ``gate_up_proj`` (roles ``qkv`` / ``gate_up``);
* DeepSeek-V3's MLA projections get their own roles (``q_a``, ``q_b``, ``kv_a``, ``kv_b``);
* MoE experts are **not expanded**: one :class:`LinearTensor` with ``count = n_experts`` and ``*``
  in place of the expert index in its name (:meth:`LinearTensor.instance_names` expands it);
* tied embeddings: there is no ``lm_head`` tensor and ``ModelSpec.tied_embeddings`` is True
  (quantizing "lm_head" means quantizing the embedding).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType

from quant.errors import UnknownFormatError

class UnknownModelError(UnknownFormatError):
    """A model id that is not in the catalog."""


@dataclass(frozen=True, slots=True)
class LinearTensor:
    """One weight matrix of a model (or ``count`` identical-shape copies of it, e.g. MoE experts)."""

    name: str
    """Hugging Face name; ``*`` stands for the expert index when ``count > 1``."""
    role: str
    """What the matrix does (see :data:`models.roles.ROLES`)."""
    layer: int | None
    """Decoder layer index; None for the embedding and lm_head."""
    out_features: int
    in_features: int
    count: int = 1
    """How many copies of this shape the model holds (experts); each is a separate matrix."""

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def params(self) -> int:
        """Weights in all ``count`` copies."""
        return self.out_features * self.in_features * self.count

    def instance_names(self) -> tuple[str, ...]:
        """The name of every copy: the expert index substituted for ``*``."""
        if self.count == 1:
            return (self.name,)
        return tuple(self.name.replace("*", str(e)) for e in range(self.count))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A catalogued model: its linear tensors and parameter totals."""

    id: str
    family: str
    hf_repo: str
    layers: int
    tensors: tuple[LinearTensor, ...]
    other_params: int
    """Parameters that are not matrices: norms, biases, router biases."""
    tied_embeddings: bool
    advertised_params: int
    advertised_source: str
    source: str
    """Where the shapes come from (the Hugging Face config.json)."""
    experts_per_token: int | None = None
    """Routed experts active per token (MoE only)."""

    @property
    def linear_params(self) -> int:
        """Weights of every matrix in ``tensors``: decoder linears, embedding and untied lm_head."""
        return sum(t.params for t in self.tensors)

    @property
    def decoder_linear_params(self) -> int:
        """Weights of the linear layers inside the decoder layers (q/k/v/o and the MLP of every layer)."""
        return sum(t.params for t in self.tensors if t.layer is not None)

    @property
    def params(self) -> int:
        """Total parameters, as the vendor counts them (matrices + norms/biases)."""
        return self.linear_params + self.other_params

    @property
    def active_params(self) -> int:
        """Parameters used per token: all but the routed experts that are not selected."""
        idle = 0
        if self.experts_per_token is not None:
            idle = sum(t.params // t.count * (t.count - self.experts_per_token)
                       for t in self.tensors if t.role.startswith("expert_"))
        return self.params - idle

    @property
    def n_matrices(self) -> int:
        """Number of weight matrices, expert copies counted one by one."""
        return sum(t.count for t in self.tensors)


@dataclass(frozen=True, slots=True)
class _Decoder:
    """The config.json fields of one decoder; MoE/MLA fields only where used."""

    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    qk_norm: str = "none"
    """none | per_head (a head_dim RMSNorm on q and k) | full_width (OLMo-2: on the whole q and k)."""
    norms_per_layer: int = 2
    """hidden-wide norms per layer (Gemma-3 has 4: pre/post attention and feed-forward)."""
    fused: bool = False
    """Phi-3: qkv_proj and gate_up_proj."""
    experts: int = 0
    """Mixtral-style MoE: every layer's MLP is ``experts`` SwiGLU experts plus a router."""


def _attention(d: _Decoder, p: str, i: int) -> Iterator[LinearTensor]:
    q_width, kv_width = d.heads * d.head_dim, d.kv_heads * d.head_dim
    if d.fused:
        yield LinearTensor(p + "self_attn.qkv_proj.weight", "qkv", i, q_width + 2 * kv_width, d.hidden)
    else:
        yield LinearTensor(p + "self_attn.q_proj.weight", "q", i, q_width, d.hidden)
        yield LinearTensor(p + "self_attn.k_proj.weight", "k", i, kv_width, d.hidden)
        yield LinearTensor(p + "self_attn.v_proj.weight", "v", i, kv_width, d.hidden)
    yield LinearTensor(p + "self_attn.o_proj.weight", "o", i, d.hidden, q_width)


def _dense_mlp(p: str, i: int, hidden: int, inter: int, fused: bool = False) -> Iterator[LinearTensor]:
    if fused:
        yield LinearTensor(p + "mlp.gate_up_proj.weight", "gate_up", i, 2 * inter, hidden)
    else:
        yield LinearTensor(p + "mlp.gate_proj.weight", "gate", i, inter, hidden)
        yield LinearTensor(p + "mlp.up_proj.weight", "up", i, inter, hidden)
    yield LinearTensor(p + "mlp.down_proj.weight", "down", i, hidden, inter)


def _embeddings(vocab: int, hidden: int, tied: bool) -> tuple[LinearTensor, ...]:
    embed = LinearTensor("model.embed_tokens.weight", "embed", None, vocab, hidden)
    return (embed,) if tied else (embed, LinearTensor("lm_head.weight", "lm_head", None, vocab, hidden))


def _decoder_tensors(d: _Decoder) -> tuple[LinearTensor, ...]:
    out = list(_embeddings(d.vocab, d.hidden, d.tied))
    for i in range(d.layers):
        p = f"model.layers.{i}."
        out += _attention(d, p, i)
        if d.experts:
            # Mixtral names: block_sparse_moe.gate (router), experts.{e}.w1/w3/w2 (transformers' MixtralSparseMoeBlock)
            moe = p + "block_sparse_moe."
            out.append(LinearTensor(moe + "gate.weight", "router", i, d.experts, d.hidden))
            out.append(LinearTensor(moe + "experts.*.w1.weight", "expert_gate", i, d.inter, d.hidden, d.experts))
            out.append(LinearTensor(moe + "experts.*.w3.weight", "expert_up", i, d.inter, d.hidden, d.experts))
            out.append(LinearTensor(moe + "experts.*.w2.weight", "expert_down", i, d.hidden, d.inter, d.experts))
        else:
            out += _dense_mlp(p, i, d.hidden, d.inter, d.fused)
    return tuple(out)


def _decoder_other_params(d: _Decoder) -> int:
    q_width, kv_width = d.heads * d.head_dim, d.kv_heads * d.head_dim
    qk_norm = {"none": 0, "per_head": 2 * d.head_dim, "full_width": q_width + kv_width}[d.qk_norm]
    bias = q_width + 2 * kv_width if d.qkv_bias else 0
    return d.layers * (d.norms_per_layer * d.hidden + qk_norm + bias) + d.hidden  # + final norm


def _deepseek_v3() -> tuple[tuple[LinearTensor, ...], int]:
    """DeepSeek-V3 (its config.json and modeling_deepseek.py): MLA attention, 3 dense layers,
    58 MoE layers, no MTP layer."""
    hidden, dense_inter, expert_inter, routed, layers, dense_layers = 7168, 18432, 2048, 256, 61, 3
    heads, q_lora, kv_lora, nope, rope, v_dim, vocab = 128, 1536, 512, 128, 64, 128, 129280
    out = list(_embeddings(vocab, hidden, tied=False))
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            LinearTensor(p + "self_attn.q_a_proj.weight", "q_a", i, q_lora, hidden),
            LinearTensor(p + "self_attn.q_b_proj.weight", "q_b", i, heads * (nope + rope), q_lora),
            LinearTensor(p + "self_attn.kv_a_proj_with_mqa.weight", "kv_a", i, kv_lora + rope, hidden),
            LinearTensor(p + "self_attn.kv_b_proj.weight", "kv_b", i, heads * (nope + v_dim), kv_lora),
            LinearTensor(p + "self_attn.o_proj.weight", "o", i, hidden, heads * v_dim),
        ]
        if i < dense_layers:
            out += _dense_mlp(p, i, hidden, dense_inter)
            continue
        e = p + "mlp.experts.*."
        out += [
            LinearTensor(p + "mlp.gate.weight", "router", i, routed, hidden),
            LinearTensor(e + "gate_proj.weight", "expert_gate", i, expert_inter, hidden, routed),
            LinearTensor(e + "up_proj.weight", "expert_up", i, expert_inter, hidden, routed),
            LinearTensor(e + "down_proj.weight", "expert_down", i, hidden, expert_inter, routed),
        ]
        out += _dense_mlp(p + "mlp.shared_experts.", i, hidden, expert_inter)  # 1 shared expert
    # per layer: q_a_layernorm + kv_a_layernorm + 2 RMSNorms; final norm; router bias per MoE layer
    other = layers * (q_lora + kv_lora + 2 * hidden) + hidden + (layers - dense_layers) * routed
    return tuple(out), other


def _from_decoder(*, id_: str, family: str, repo: str, decoder: _Decoder, advertised: float,
                  advertised_source: str, experts_per_token: int | None = None) -> ModelSpec:
    return ModelSpec(id=id_, family=family, hf_repo=repo, layers=decoder.layers, tensors=_decoder_tensors(decoder),
                     other_params=_decoder_other_params(decoder), tied_embeddings=decoder.tied,
                     advertised_params=int(advertised), advertised_source=advertised_source,
                     source=_config_url(repo), experts_per_token=experts_per_token)


def _config_url(repo: str) -> str:
    """The primary source of a model's shapes: its Hugging Face ``config.json``."""
    return f"https://huggingface.co/{repo}/blob/main/config.json"


def _build() -> dict[str, ModelSpec]:
    llama, qwen3, gemma3, smol = "llama", "qwen3", "gemma3", "smollm"
    models = [
        _from_decoder(id_="llama-3.1-8b", family=llama, repo="meta-llama/Llama-3.1-8B",
                      decoder=_Decoder(hidden=4096, inter=14336, layers=32, heads=32, kv_heads=8, head_dim=128,
                                       vocab=128256, tied=False),
                      advertised=8.03e9, advertised_source="HF lists 8.03B"),
        _from_decoder(id_="llama-3.1-70b", family=llama, repo="meta-llama/Llama-3.1-70B",
                      decoder=_Decoder(hidden=8192, inter=28672, layers=80, heads=64, kv_heads=8, head_dim=128,
                                       vocab=128256, tied=False),
                      advertised=70.6e9, advertised_source="HF lists 70.6B"),
        _from_decoder(id_="llama-3.1-405b", family=llama, repo="meta-llama/Llama-3.1-405B",
                      decoder=_Decoder(hidden=16384, inter=53248, layers=126, heads=128, kv_heads=8, head_dim=128,
                                       vocab=128256, tied=False),
                      advertised=405e9, advertised_source="405B (model name)"),
        _from_decoder(id_="llama-3.2-1b", family=llama, repo="meta-llama/Llama-3.2-1B",
                      decoder=_Decoder(hidden=2048, inter=8192, layers=16, heads=32, kv_heads=8, head_dim=64,
                                       vocab=128256, tied=True),
                      advertised=1.23e9, advertised_source="model card: 1.23B"),
        _from_decoder(id_="llama-3.2-3b", family=llama, repo="meta-llama/Llama-3.2-3B",
                      decoder=_Decoder(hidden=3072, inter=8192, layers=28, heads=24, kv_heads=8, head_dim=128,
                                       vocab=128256, tied=True),
                      advertised=3.21e9, advertised_source="model card: 3.21B"),
        _from_decoder(id_="mistral-7b-v0.3", family="mistral", repo="mistralai/Mistral-7B-v0.3",
                      decoder=_Decoder(hidden=4096, inter=14336, layers=32, heads=32, kv_heads=8, head_dim=128,
                                       vocab=32768, tied=False),
                      advertised=7.25e9, advertised_source="7.25B"),
        _from_decoder(id_="qwen2.5-0.5b", family="qwen2.5", repo="Qwen/Qwen2.5-0.5B",
                      decoder=_Decoder(hidden=896, inter=4864, layers=24, heads=14, kv_heads=2, head_dim=64,
                                       vocab=151936, tied=True, qkv_bias=True),
                      advertised=0.49e9, advertised_source="0.49B"),
        _from_decoder(id_="qwen2.5-3b", family="qwen2.5", repo="Qwen/Qwen2.5-3B",
                      decoder=_Decoder(hidden=2048, inter=11008, layers=36, heads=16, kv_heads=2, head_dim=128,
                                       vocab=151936, tied=True, qkv_bias=True),
                      advertised=3.09e9, advertised_source="3.09B"),
        _from_decoder(id_="qwen2.5-7b", family="qwen2.5", repo="Qwen/Qwen2.5-7B",
                      decoder=_Decoder(hidden=3584, inter=18944, layers=28, heads=28, kv_heads=4, head_dim=128,
                                       vocab=152064, tied=False, qkv_bias=True),
                      advertised=7.61e9, advertised_source="model card: 7.61B"),
        _from_decoder(id_="qwen3-4b", family=qwen3, repo="Qwen/Qwen3-4B",
                      decoder=_Decoder(hidden=2560, inter=9728, layers=36, heads=32, kv_heads=8, head_dim=128,
                                       vocab=151936, tied=True, qk_norm="per_head"),
                      advertised=4.0e9, advertised_source="model card: 4.0B"),
        _from_decoder(id_="qwen3-8b", family=qwen3, repo="Qwen/Qwen3-8B",
                      decoder=_Decoder(hidden=4096, inter=12288, layers=36, heads=32, kv_heads=8, head_dim=128,
                                       vocab=151936, tied=False, qk_norm="per_head"),
                      advertised=8.2e9, advertised_source="model card: 8.2B"),
        _from_decoder(id_="gemma-3-1b", family=gemma3, repo="google/gemma-3-1b-pt",
                      decoder=_Decoder(hidden=1152, inter=6912, layers=26, heads=4, kv_heads=1, head_dim=256,
                                       vocab=262144, tied=True, qk_norm="per_head", norms_per_layer=4),
                      advertised=1.0e9, advertised_source="Gemma 3 report: 698M + 302M embedding"),
        _from_decoder(id_="smollm2-135m", family=smol, repo="HuggingFaceTB/SmolLM2-135M",
                      decoder=_Decoder(hidden=576, inter=1536, layers=30, heads=9, kv_heads=3, head_dim=64,
                                       vocab=49152, tied=True),
                      advertised=135e6, advertised_source="135M (model name)"),
        _from_decoder(id_="smollm2-360m", family=smol, repo="HuggingFaceTB/SmolLM2-360M",
                      decoder=_Decoder(hidden=960, inter=2560, layers=32, heads=15, kv_heads=5, head_dim=64,
                                       vocab=49152, tied=True),
                      advertised=360e6, advertised_source="360M (model name)"),
        _from_decoder(id_="smollm2-1.7b", family=smol, repo="HuggingFaceTB/SmolLM2-1.7B",
                      decoder=_Decoder(hidden=2048, inter=8192, layers=24, heads=32, kv_heads=32, head_dim=64,
                                       vocab=49152, tied=True),
                      advertised=1.7e9, advertised_source="1.7B (model name)"),
        # "3B" in the name; 3.08B is the HF SmolLM3 blog's count [secondary: https://www.aibase.com/news/19552]
        _from_decoder(id_="smollm3-3b", family=smol, repo="HuggingFaceTB/SmolLM3-3B",
                      decoder=_Decoder(hidden=2048, inter=11008, layers=36, heads=16, kv_heads=4, head_dim=128,
                                       vocab=128256, tied=True),
                      advertised=3.08e9, advertised_source="SmolLM3 blog: 3.08B"),
        _from_decoder(id_="phi-3-mini-4k", family="phi3", repo="microsoft/Phi-3-mini-4k-instruct",
                      decoder=_Decoder(hidden=3072, inter=8192, layers=32, heads=32, kv_heads=32, head_dim=96,
                                       vocab=32064, tied=False, fused=True),
                      advertised=3.8e9, advertised_source="model card: 3.8B"),
        # "7B" in the name; 7.3B is the HF hub's parameter count [unverified]
        _from_decoder(id_="olmo-2-7b", family="olmo2", repo="allenai/OLMo-2-1124-7B",
                      decoder=_Decoder(hidden=4096, inter=11008, layers=32, heads=32, kv_heads=32, head_dim=128,
                                       vocab=100352, tied=False, qk_norm="full_width"),
                      advertised=7.3e9, advertised_source="HF hub: 7.3B [unverified]"),
        _from_decoder(id_="mixtral-8x7b", family="mixtral", repo="mistralai/Mixtral-8x7B-v0.1",
                      decoder=_Decoder(hidden=4096, inter=14336, layers=32, heads=32, kv_heads=8, head_dim=128,
                                       vocab=32000, tied=False, experts=8),
                      advertised=46.7e9, advertised_source="Mistral AI: 46.7B total, 12.9B active",
                      experts_per_token=2),
    ]
    tensors, other = _deepseek_v3()
    repo = "deepseek-ai/DeepSeek-V3"
    models.append(ModelSpec(id="deepseek-v3", family="deepseek-v3", hf_repo=repo, layers=61, tensors=tensors,
                            other_params=other, tied_embeddings=False, advertised_params=int(671e9),
                            advertised_source="README: 671B total, 37B active", source=_config_url(repo),
                            experts_per_token=8))
    return {m.id: m for m in models}


_MODELS = MappingProxyType(_build())


def list_models() -> list[str]:
    """Ids of every catalogued model, sorted."""
    return sorted(_MODELS)


def get_model(model_id: str) -> ModelSpec:
    """The catalogued model ``model_id`` (case-insensitive).

    Raises:
        UnknownModelError: with the closest known ids.
    """
    spec = _MODELS.get(model_id.strip().lower())
    if spec is None:
        close = difflib.get_close_matches(model_id.strip().lower(), list(_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {model_id!r}{hint} (known: {', '.join(list_models())}; "
                                "see `dse models`)")
    return spec
