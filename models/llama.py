"""Llama-family decoders (Llama, Mistral, Qwen2, SmolLM2) in numpy, from a GGUF file or an HF checkpoint.

The forward pass follows HF ``LlamaForCausalLM`` (Touvron et al. 2023): token embedding,
``layers`` blocks of pre-RMSNorm grouped-query attention with rotary position embeddings
(Su et al. 2021) and a SwiGLU MLP (Shazeer 2020), a final RMSNorm and the LM head (tied to the
embedding when the checkpoint has no ``output.weight`` / ``lm_head.weight``). Qwen2 adds biases
to q, k and v (read when present). Mistral's sliding window is not applied: every text this
tool runs is far shorter than the window.

RoPE layout: HF checkpoints rotate the two halves of each head (``rotate_half``); llama.cpp's
converter permutes the q/k rows of ``llama`` GGUF files so that rotation pairs are adjacent
(ggml ``ROPE_TYPE_NORM``), while ``qwen2`` GGUF files keep the halves (``ROPE_TYPE_NEOX``).

Pre-quantized checkpoints: the packaged SmolLM2-135M GGUF stores its linears as Q4_1 and its
embedding as Q8_0. Their dequantized float32 values are this model's reference weights; errors
are measured against them, not against the (unavailable) original float model.

All arithmetic is float32 except the softmaxes (float64 accumulations are not needed at these
lengths); BLAS thread count is the caller's business (:func:`models.forward.blas_threads`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import SourceError
from models.source import bf16_to_float32

SUPPORTED_HF = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
"""HF ``architectures`` entries this decoder runs, with their GGUF architecture name."""
SUPPORTED_GGUF = ("llama", "qwen2")


@dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a Llama-family decoder."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    rms_eps: float
    rope_theta: float
    rope_interleaved: bool
    """True: rotate adjacent pairs (llama GGUF); False: rotate halves (HF, qwen2 GGUF)."""


# role -> (GGUF name, HF name) of per-layer tensors; {i} is the layer index
_LAYER_NAMES = {
    "attn_norm": ("blk.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    "q": ("blk.{i}.attn_q.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    "k": ("blk.{i}.attn_k.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    "v": ("blk.{i}.attn_v.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    "q_bias": ("blk.{i}.attn_q.bias", "model.layers.{i}.self_attn.q_proj.bias"),
    "k_bias": ("blk.{i}.attn_k.bias", "model.layers.{i}.self_attn.k_proj.bias"),
    "v_bias": ("blk.{i}.attn_v.bias", "model.layers.{i}.self_attn.v_proj.bias"),
    "o": ("blk.{i}.attn_output.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    "ffn_norm": ("blk.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    "gate": ("blk.{i}.ffn_gate.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    "up": ("blk.{i}.ffn_up.weight", "model.layers.{i}.mlp.up_proj.weight"),
    "down": ("blk.{i}.ffn_down.weight", "model.layers.{i}.mlp.down_proj.weight"),
}
_GLOBAL_NAMES = {
    "embed": ("token_embd.weight", "model.embed_tokens.weight"),
    "norm": ("output_norm.weight", "model.norm.weight"),
    "head": ("output.weight", "lm_head.weight"),
}


class LlamaModel:
    """A Llama-family decoder with its reference weights (float32) and tokenizer.

    ``weights`` maps the checkpoint's own tensor names to arrays; :meth:`forward` takes overrides
    for any of them (e.g. quantized-then-dequantized matrices).
    """

    def __init__(self, config: LlamaConfig, weights: dict[str, np.ndarray], tokenizer: Any, *, gguf: bool,
                 label: str) -> None:
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        self.label = label
        self._layout = 0 if gguf else 1
        names = [n.format(i=i) for i in range(config.layers) for n in (v[self._layout] for v in _LAYER_NAMES.values())]
        required = [n for n in names if not n.endswith(".bias")] + [_GLOBAL_NAMES[r][self._layout]
                                                                   for r in ("embed", "norm")]
        missing = [n for n in required if n not in weights]
        if missing:
            raise SourceError(f"{label}: tensor {missing[0]!r} is missing ({len(missing)} missing in all); "
                              "the checkpoint is incomplete or not a Llama-family decoder")
        half = np.arange(0, config.head_dim, 2, dtype=np.float64) / config.head_dim
        self._inv_freq = config.rope_theta ** -half  # (head_dim/2,)

    def name(self, role: str, layer: int | None = None) -> str:
        """The checkpoint's name of a tensor role (see ``_LAYER_NAMES``/``_GLOBAL_NAMES``)."""
        if layer is None:
            return _GLOBAL_NAMES[role][self._layout]
        return _LAYER_NAMES[role][self._layout].format(i=layer)

    def head_name(self) -> str:
        """The LM head's tensor: ``output.weight``/``lm_head.weight``, or the embedding when tied."""
        head = self.name("head")
        return head if head in self.weights else self.name("embed")

    def layer_of(self, tensor: str) -> int | None:
        """Index of the block that reads ``tensor`` first (None: the embedding, read before block 0)."""
        for role in ("q", "k", "v", "o", "gate", "up", "down"):
            for i in range(self.config.layers):
                if self.name(role, i) == tensor:
                    return i
        if tensor in (self.name("head"), self.name("norm")):
            return self.config.layers
        return None

    def matrices(self) -> list[str]:
        """Names of the weight matrices a forward pass reads (the quantizable ones)."""
        roles = ("q", "k", "v", "o", "gate", "up", "down")
        out = [self.name("embed")] + [self.name(r, i) for i in range(self.config.layers) for r in roles]
        return out + ([self.name("head")] if self.name("head") in self.weights else [])

    def tokenize(self, text: str) -> np.ndarray:
        """(tokens,) int64 ids of ``text`` (no BOS: the packaged SmolLM2 sets add_bos_token false)."""
        return np.array(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def forward(self, ids: np.ndarray, overrides: Mapping[str, np.ndarray] | None = None, *, start: int = 0,
                hidden: np.ndarray | None = None, keep: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits of a batch of equal-length sequences.

        Args:
            ids: (batch, tokens) int token ids.
            overrides: tensor name -> array replacing the reference weight.
            start: first block to run; ``hidden`` is then the (batch, tokens, hidden) residual
                stream entering it (from an earlier call with ``keep=True``).
            keep: also return the residual stream entering every block, then the last block's
                output (for restarts).

        Returns:
            (batch, tokens, vocab) float32 logits, and the kept states (``states[i]`` enters block
            ``start + i``).
        """
        cfg = self.config
        w = {**self.weights, **(overrides or {})}
        batch, tokens = ids.shape
        x = w[self.name("embed")][ids] if hidden is None else hidden
        angles = np.arange(tokens, dtype=np.float64)[:, None] * self._inv_freq[None, :]
        cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
        causal = np.triu(np.full((tokens, tokens), -np.inf, np.float32), k=1)
        states: list[np.ndarray] = []
        for i in range(start, cfg.layers):
            if keep:
                states.append(x)
            x = self._block(w, i, x, cos, sin, causal)
        if keep:
            states.append(x)
        x = _rms_norm(x, w[self.name("norm")], cfg.rms_eps)
        head = w.get(self.name("head"), w[self.name("embed")])
        return x @ head.T, states

    def _block(self, w: Mapping[str, np.ndarray], i: int, x: np.ndarray, cos: np.ndarray, sin: np.ndarray,
               causal: np.ndarray) -> np.ndarray:
        cfg = self.config
        batch, tokens, _ = x.shape
        h = _rms_norm(x, w[self.name("attn_norm", i)], cfg.rms_eps)

        def proj(role: str, heads: int) -> np.ndarray:
            y = h @ w[self.name(role, i)].T
            bias = w.get(self.name(role + "_bias", i))
            if bias is not None:
                y = y + bias
            return y.reshape(batch, tokens, heads, cfg.head_dim).transpose(0, 2, 1, 3)  # (B, heads, T, hd)

        group = cfg.heads // cfg.kv_heads
        q = self._rope(proj("q", cfg.heads), cos, sin)
        k = self._rope(proj("k", cfg.kv_heads), cos, sin)
        v = proj("v", cfg.kv_heads)
        # grouped-query attention: each kv head serves `group` consecutive query heads
        q = q.reshape(batch, cfg.kv_heads, group, tokens, cfg.head_dim)
        scores = q @ k[:, :, None].transpose(0, 1, 2, 4, 3) / np.float32(np.sqrt(cfg.head_dim)) + causal
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v[:, :, None]).reshape(batch, cfg.heads, tokens, cfg.head_dim)
        context = context.transpose(0, 2, 1, 3).reshape(batch, tokens, cfg.heads * cfg.head_dim)
        x = x + context @ w[self.name("o", i)].T
        h = _rms_norm(x, w[self.name("ffn_norm", i)], cfg.rms_eps)
        gate = h @ w[self.name("gate", i)].T
        inner = gate / (1.0 + np.exp(-gate)) * (h @ w[self.name("up", i)].T)  # SwiGLU: silu(gate) * up
        return x + inner @ w[self.name("down", i)].T

    def _rope(self, t: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        """Rotate (B, heads, T, head_dim) by position; ``cos``/``sin`` are (T, head_dim/2)."""
        if self.config.rope_interleaved:
            a, b = t[..., 0::2], t[..., 1::2]
            out = np.empty_like(t)
            out[..., 0::2] = a * cos - b * sin
            out[..., 1::2] = b * cos + a * sin
            return out
        half = t.shape[-1] // 2
        a, b = t[..., :half], t[..., half:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def _rms_norm(x: np.ndarray, gamma: np.ndarray, eps: float) -> np.ndarray:
    ms = np.mean(np.square(x), axis=-1, keepdims=True)
    return (x / np.sqrt(ms + np.float32(eps)) * gamma).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# loading


def load_gguf(path: Path, label: str | None = None) -> LlamaModel:
    """A decoder from a GGUF file: config from its metadata, tokenizer from its vocabulary and merges."""
    from gguf.quants import dequantize

    from models.gguf_source import open_gguf_reader

    label = label or str(path)
    reader = open_gguf_reader(path)
    meta = {name: field for name, field in reader.fields.items()}

    def value(key: str, default: Any = None) -> Any:
        field = meta.get(key)
        if field is None:
            if default is None:
                raise SourceError(f"{label}: GGUF metadata {key!r} is missing; re-convert the model")
            return default
        return field.contents()

    arch = value("general.architecture")
    if arch not in SUPPORTED_GGUF:
        raise SourceError(f"{label}: architecture {arch!r} has no forward pass here; "
                          f"supported GGUF architectures: {', '.join(SUPPORTED_GGUF)}")
    hidden, heads = int(value(f"{arch}.embedding_length")), int(value(f"{arch}.attention.head_count"))
    weights = {}
    for t in reader.tensors:
        data = t.data
        try:
            array = data.astype(np.float32) if data.dtype.kind == "f" else dequantize(data, t.tensor_type)
        except (ValueError, NotImplementedError) as err:
            raise SourceError(f"{label}: tensor {t.name!r} cannot be dequantized ({err})") from None
        weights[t.name] = np.ascontiguousarray(array, dtype=np.float32).reshape([int(d) for d in t.shape][::-1])
    config = LlamaConfig(
        layers=int(value(f"{arch}.block_count")), hidden=hidden, heads=heads,
        kv_heads=int(value(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(value(f"{arch}.rope.dimension_count", hidden // heads)),
        ffn=int(value(f"{arch}.feed_forward_length")), vocab=weights["token_embd.weight"].shape[0],
        rms_eps=float(value(f"{arch}.attention.layer_norm_rms_epsilon")),
        rope_theta=float(value(f"{arch}.rope.freq_base", 10000.0)), rope_interleaved=arch == "llama",
    )
    return LlamaModel(config, weights, _gguf_tokenizer(value, label), gguf=True, label=label)


def _gguf_tokenizer(value: Any, label: str) -> Any:
    """A byte-level BPE tokenizer built from ``tokenizer.ggml.tokens`` and ``.merges``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if value("tokenizer.ggml.model") != "gpt2":
        raise SourceError(f"{label}: tokenizer {value('tokenizer.ggml.model')!r} is not supported "
                          "(only byte-level BPE, tokenizer.ggml.model = gpt2)")
    tokens = value("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in value("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # SmolLM2 (llama.cpp pre-tokenizer "smollm") splits digits one by one before the GPT-2 regex
    digits = value("tokenizer.ggml.pre", "default") == "smollm"
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    return tok


def load_hf(directory: Path, label: str | None = None) -> LlamaModel:
    """A decoder from an HF checkpoint directory (``config.json``, safetensors, ``tokenizer.json``)."""
    from tokenizers import Tokenizer

    from models.safetensors_source import SafetensorsSource

    label = label or str(directory)
    try:
        cfg = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise SourceError(f"{directory}/config.json: cannot read ({err}); a decoder checkpoint needs it") from None
    archs = cfg.get("architectures") or []
    arch = next((a for a in archs if a in SUPPORTED_HF), None)
    if arch is None:
        raise SourceError(f"{directory}/config.json: architectures {archs} has no forward pass here; "
                          f"supported: {', '.join(SUPPORTED_HF)}")
    # transformers >= 5 writes rope_theta (and the scaling type) under rope_parameters, 4.x at top level
    rope = cfg.get("rope_parameters") or {}
    try:
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        config = LlamaConfig(
            layers=int(cfg["num_hidden_layers"]), hidden=hidden, heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads), ffn=int(cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]), rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0), rope_interleaved=False,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise SourceError(f"{directory}/config.json: field {err} missing or invalid") from None
    if cfg.get("rope_scaling") or rope.get("rope_type", "default") != "default":
        raise SourceError(f"{directory}/config.json: rope scaling {cfg.get('rope_scaling') or rope} is not "
                          "supported (plain RoPE only)")
    source = SafetensorsSource(directory)
    weights = {info.name: source.load(info.name) for info in source.infos()}
    weights.update(_safetensors_vectors(directory))
    if cfg.get("tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.exists():
        raise SourceError(f"{tokenizer_file}: missing; a decoder checkpoint needs its tokenizer.json")
    return LlamaModel(config, weights, Tokenizer.from_file(str(tokenizer_file)), gguf=False, label=label)


_VECTOR_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def _safetensors_vectors(directory: Path) -> dict[str, np.ndarray]:
    """The 1-D float tensors (norm weights, biases) of every safetensors file in ``directory``."""
    out = {}
    for file in sorted(directory.glob("*.safetensors")):
        with open(file, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
            for name, meta in header.items():
                if name == "__metadata__" or len(meta["shape"]) != 1 or meta["dtype"] not in _VECTOR_DTYPES:
                    continue
                begin, end = meta["data_offsets"]
                fh.seek(8 + size + begin)
                raw = np.frombuffer(fh.read(end - begin), dtype=_VECTOR_DTYPES[meta["dtype"]])
                out[name] = bf16_to_float32(raw) if meta["dtype"] == "BF16" else raw.astype(np.float32)
    return out


def load_decoder(spec: str | Path, label: str | None = None) -> LlamaModel:
    """A GGUF file or an HF checkpoint directory; one-line SourceError for anything else."""
    path = Path(spec)
    if path.suffix == ".gguf" and path.is_file():
        return load_gguf(path, label)
    if path.is_dir() and (path / "config.json").exists():
        return load_hf(path, label)
    raise SourceError(f"{spec}: not a GGUF file or an HF checkpoint directory with config.json; "
                      "no decoder forward pass for it")


def chunk_tokens(ids: np.ndarray, seq_len: int, max_tokens: int) -> np.ndarray:
    """(sequences, seq_len) windows of a token stream: at most ``max_tokens`` tokens, remainder dropped.

    A stream shorter than ``seq_len`` gives one sequence of its own length.
    """
    ids = ids[:max_tokens]
    if len(ids) < seq_len:
        return ids[None, :]
    n = len(ids) // seq_len
    return ids[: n * seq_len].reshape(n, seq_len)

