"""Make the HF-checkpoint decoder oracles: tiny random Qwen2 and Mistral models and their log-probs.

Run once, in a throwaway venv that is NOT the project's (torch is not a dependency of sop-dse):

    python3 -m venv /tmp/oracle && /tmp/oracle/bin/pip install torch==2.13.0 transformers==5.24.0 safetensors numpy
    /tmp/oracle/bin/python tests/models/data/make_hf_decoder_oracles.py

transformers' own Qwen2ForCausalLM and MistralForCausalLM (eager attention, float32) are built
from a fixed torch seed, written with ``save_pretrained`` (config.json + model.safetensors) into
``qwen2-tiny/`` and ``mistral-tiny/`` next to this file, and run on fixed random token ids. What
they exercise that the SmolLM2 oracle does not: the HF safetensors loader, rotate-half RoPE with
rope_theta 1e6 read from config.json (transformers 5 writes it under ``rope_parameters``), Qwen2's
q/k/v biases, tied (Qwen2) and untied (Mistral) heads, and a Mistral head_dim given explicitly.

HF's default init (normal, std 0.02) makes every logit nearly zero and attention nearly uniform,
so RoPE and biases would barely show; weights are re-drawn at scales where they matter: matrices
std 1/sqrt(fan_in), embeddings and head std 0.4 (logits of a few nats), norm gains 1 + 0.1 N(0, 1),
biases 0.5 N(0, 1) (Qwen2 checkpoints' k biases are of that order or larger).

Each ``<name>.npz`` holds ``ids`` (TOKENS,) int64, ``logp`` (TOKENS, vocab) float64 log-softmax of
transformers' float32 logits, and ``versions``. The load_hf tokenizer requirement is met by a
256-token byte-level BPE tokenizer.json (no merges); the oracle does not use it.
"""

from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

TOKENS = 24
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=64)
HERE = Path(__file__).parent


def byte_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def reinit(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.5)
            elif "embed_tokens" in name or name == "lm_head.weight":
                p.normal_(0.0, 0.4)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)


def make(name: str, model: torch.nn.Module, seed: int) -> None:
    reinit(model)
    model.eval()
    out = HERE / name
    model.save_pretrained(out, safe_serialization=True)
    for extra in out.iterdir():
        if extra.name not in ("config.json", "model.safetensors"):
            extra.unlink()  # generation_config.json: the loader reads neither it nor anything else
    byte_tokenizer().save(str(out / "tokenizer.json"))
    vocab = model.config.vocab_size
    ids = np.random.default_rng(seed).integers(0, vocab, TOKENS)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.from_numpy(ids)[None]).logits[0].double(), dim=-1)
    np.savez_compressed(HERE / f"{name}.npz", ids=ids, logp=logp.numpy(),
                        versions=np.array(f"torch {torch.__version__}, transformers {transformers.__version__}"))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{name}: {size / 1e3:.0f} kB checkpoint, {TOKENS} tokens, vocab {vocab}, "
          f"max top-1 prob {float(logp.exp().max(-1).values.max()):.2f}")


torch.manual_seed(0)
# Qwen2 as Qwen2.5-0.5B: q/k/v biases (always on in Qwen2), tied head; vocab padded past the tokenizer
make("qwen2-tiny", Qwen2ForCausalLM._from_config(
    Qwen2Config(vocab_size=320, tie_word_embeddings=True, **SHAPE), attn_implementation="eager"), seed=1)
# Mistral: untied head, no biases; no sliding window (the loader ignores it)
make("mistral-tiny", MistralForCausalLM._from_config(
    MistralConfig(vocab_size=256, tie_word_embeddings=False, sliding_window=None, head_dim=16, **SHAPE),
    attn_implementation="eager"), seed=2)
