"""Which axis of a stored checkpoint tensor is the input: the rules, and refusals when unknown.

Blocks run along the input dimension, so a matrix read with its axes swapped is quantized
along the wrong axis and its error is silently wrong. Each safetensors tensor gets one rule:

* ``(out, in)``: ``torch.nn.Linear`` (the Hugging Face default), including fused projections
  (Phi-3 ``qkv_proj``, GPT-NeoX/Falcon/BLOOM ``query_key_value``, ``gate_up_proj``) whose
  fused axis is the output; embeddings (vocab, hidden) also block along their vectors.
* GPT-2 Conv1D ``(in, out)``, transposed: ``c_attn``, ``q_attn``, ``c_proj`` and ``c_fc`` of the
  model types whose modelling code uses ``transformers.pytorch_utils.Conv1D`` (gpt2, openai-gpt,
  imagegpt, decision_transformer); the stored shape is checked against ``n_embd``.
  GPTBigCode uses the same names with ``nn.Linear``; any other model type is refused.
* Flax/Keras ``kernel`` ``(in, out)``, transposed (``flax.linen.Dense`` stores (in, out)).
* Fused MoE experts, 3-D ``experts.<leaf>`` of shape (E, out, in) (transformers' fused
  experts) or (E, in, out) (gpt-oss, Llama 4): one matrix per expert, ``name[e]`` as for GGUF;
  the input axis is the one of ``hidden_size`` for gate/up projections and the other one for
  down projections, with the model type deciding when both axes match.

The model type and sizes come from the ``config.json`` beside the checkpoint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import SourceError

LINEAR = "(out, in)"
CONV1D = "GPT-2 Conv1D (in, out), transposed"
KERNEL = "Flax kernel (in, out), transposed"
EXPERTS_OUT_IN = "fused experts (E, out, in)"
EXPERTS_IN_OUT = "fused experts (E, in, out), transposed"

CONV1D_MODEL_TYPES = ("decision_transformer", "gpt2", "imagegpt", "openai-gpt")
"""Model types whose c_attn/c_proj/c_fc are transformers' Conv1D, stored (in, out)."""
LINEAR_C_MODEL_TYPES = ("gpt_bigcode",)
"""Model types with GPT-2's module names but nn.Linear (out, in) weights."""
EXPERTS_IN_OUT_MODEL_TYPES = ("gpt_oss", "llama4", "llama4_text")
"""Model types whose fused experts are stored (E, in, out) (they multiply x @ W)."""

_CONV1D_NAME = re.compile(r"(?:^|\.)(c_attn|q_attn|c_proj|c_fc)\.weight$")
_HIDDEN_IN_LEAVES = frozenset({"gate_up_proj", "gate_proj", "up_proj", "w1", "w3"})
_HIDDEN_OUT_LEAVES = frozenset({"down_proj", "w2"})


@dataclass(frozen=True)
class Layout:
    """How one (out, in) matrix is taken from a stored tensor."""

    shape: tuple[int, int]
    """(out_features, in_features) of the matrix."""
    transpose: bool
    """The stored 2-D slice is (in, out)."""
    expert: int | None
    """Index along the leading expert axis of a 3-D tensor, or None."""
    rule: str
    """The rule applied, e.g. ``GPT-2 Conv1D (in, out), transposed``."""


def read_config(path: Path) -> dict[str, Any] | None:
    """The ``config.json`` beside a checkpoint (file or directory), or None when there is none."""
    config = (path if path.is_dir() else path.parent) / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SourceError(f"{config}: not readable JSON ({str(err).splitlines()[0]}); fix or remove it") from None
    if not isinstance(data, dict):
        raise SourceError(f"{config}: not a JSON object; fix or remove it")
    return data


def matrices(name: str, shape: list[int], config: dict[str, Any] | None, file: Path) -> list[tuple[str, Layout]]:
    """The (name, layout) of each weight matrix in stored tensor ``name``; [] when it holds none.

    Raises:
        SourceError: the tensor is a weight whose input axis cannot be known; the message names
            ``file``, the tensor and what would decide it.
    """
    if name.endswith("bias") or min(shape, default=0) < 1:
        return []
    if len(shape) == 2:
        return [(name, _matrix(name, (shape[0], shape[1]), config, file))]
    if len(shape) == 3 and re.search(r"(?:^|\.)experts\.", name):
        return _experts(name, (shape[0], shape[1], shape[2]), config, file)
    return []


def _matrix(name: str, shape: tuple[int, int], config: dict[str, Any] | None, file: Path) -> Layout:
    if name.endswith(".kernel"):
        return Layout((shape[1], shape[0]), True, None, KERNEL)
    conv = _CONV1D_NAME.search(name)
    if conv is None:
        return Layout(shape, False, None, LINEAR)
    what = f"{file}: tensor {name!r} is named like a GPT-2 Conv1D weight, stored (in, out), but"
    model_type = None if config is None else config.get("model_type")
    if model_type is None:
        raise SourceError(f"{what} no config.json beside the checkpoint gives its model_type; "
                          "put the model's config.json there")
    if model_type in LINEAR_C_MODEL_TYPES:
        return Layout(shape, False, None, LINEAR)
    if model_type not in CONV1D_MODEL_TYPES:
        raise SourceError(f"{what} config.json model_type {model_type!r} is not one whose layout sop-dse knows "
                          f"(Conv1D (in, out): {', '.join(CONV1D_MODEL_TYPES)}; "
                          f"Linear (out, in): {', '.join(LINEAR_C_MODEL_TYPES)}); cannot tell its input axis")
    assert config is not None
    width = config.get("n_embd", config.get("hidden_size"))
    if isinstance(width, int):
        inner = config.get("n_inner") or 4 * width
        want, field = (inner, "n_inner") if name.endswith("mlp.c_proj.weight") else (width, "n_embd")
        if shape[0] != want:
            raise SourceError(f"{file}: tensor {name!r} has shape {list(shape)}, but as a GPT-2 Conv1D weight "
                              f"(in, out) its input axis should be {field} = {want} (config.json); the checkpoint "
                              "and its config.json disagree")
    return Layout((shape[1], shape[0]), True, None, CONV1D)


def _experts(name: str, shape: tuple[int, int, int], config: dict[str, Any] | None,
             file: Path) -> list[tuple[str, Layout]]:
    n, a, b = shape
    what = f"{file}: tensor {name!r} holds {n} fused experts of shape {[a, b]}"
    hidden = None if config is None else config.get("hidden_size", config.get("d_model"))
    if not isinstance(hidden, int):
        raise SourceError(f"{what}, stored (E, out, in) or (E, in, out) depending on the model, and no config.json "
                          "beside the checkpoint gives hidden_size; put the model's config.json there")
    leaf = name.rsplit(".", 2)[-2] if name.endswith(".weight") else name.rsplit(".", 1)[-1]
    if leaf in _HIDDEN_IN_LEAVES:
        out_in, in_out = b == hidden, a == hidden
    elif leaf in _HIDDEN_OUT_LEAVES:
        out_in, in_out = a == hidden, b == hidden
    else:
        raise SourceError(f"{what}, a projection sop-dse does not know ({leaf!r}); cannot tell its input axis")
    if out_in and in_out:
        model_type = config.get("model_type") if config else None
        if model_type not in EXPERTS_IN_OUT_MODEL_TYPES:
            raise SourceError(f"{what}: both axes match hidden_size {hidden}, and model_type {model_type!r} does "
                              "not say which is the input; cannot tell its input axis")
        out_in = False
    if not (out_in or in_out):
        raise SourceError(f"{what}, and neither axis is hidden_size {hidden} (config.json); the checkpoint and "
                          "its config.json disagree")
    if out_in:
        return [(f"{name}[{e}]", Layout((a, b), False, e, EXPERTS_OUT_IN)) for e in range(n)]
    return [(f"{name}[{e}]", Layout((b, a), True, e, EXPERTS_IN_OUT)) for e in range(n)]
