"""Industry names for candidates: NVFP4, MXFP4, FP8, NF4, IF4, llama.cpp's Q4_0... -> canonical names.

An alias stands for exactly one canonical candidate (``dse`` prints the canonical name and says
which alias it came from). Names are matched case-insensitively, ignoring ``-``, ``_`` and
spaces, so ``mxfp6-e2m3``, ``MXFP6_E2M3`` and ``MXFP6 E2M3`` are one alias. A name that stands
for several formats (``MXFP6``, ``MXFP8``) is not an alias: it is rejected with the choices.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Alias:
    """One industry name for a canonical candidate."""

    name: str
    """The alias as documented, e.g. ``NVFP4``."""
    canonical: str
    """The candidate it resolves to, e.g. ``E2M1sE4M3``."""
    source: str
    """What the format is and where it is specified."""


ALIASES: tuple[Alias, ...] = (
    Alias("NVFP4", "E2M1sE4M3",
          "NVIDIA NVFP4: E2M1 elements, E4M3 scale per 16, FP32 tensor scale (NVIDIA Blackwell/TensorRT docs)"),
    Alias("MXFP4", "E2M1sUE8M0@32", "OCP MXFP4: E2M1 elements, E8M0 scale per 32 (OCP MX v1.0 §5)"),
    Alias("MXFP6_E2M3", "E2M3sUE8M0@32", "OCP MXFP6 E2M3, E8M0 scale per 32 (OCP MX v1.0 §5)"),
    Alias("MXFP6_E3M2", "E3M2sUE8M0@32", "OCP MXFP6 E3M2, E8M0 scale per 32 (OCP MX v1.0 §5)"),
    Alias("MXFP8_E4M3", "E4M3sUE8M0@32", "OCP MXFP8 E4M3, E8M0 scale per 32 (OCP MX v1.0 §5)"),
    Alias("MXFP8_E5M2", "E5M2sUE8M0@32", "OCP MXFP8 E5M2, E8M0 scale per 32 (OCP MX v1.0 §5)"),
    Alias("FP8", "E4M3sFP32@layer",
          "FP8 E4M3 with one FP32 scale per tensor, amax -> 448 (vLLM/TensorRT per-tensor FP8 weights)"),
    Alias("FP8_E4M3", "E4M3sFP32@layer", "FP8 E4M3 with one FP32 scale per tensor, amax -> 448"),
    Alias("FP8_E5M2", "E5M2sFP32@layer", "FP8 E5M2 with one FP32 scale per tensor, amax -> 57344"),
    Alias("NF4", "NF4sFP32@64",
          "bitsandbytes NF4: NF4 codebook, FP32 absmax per 64, no double quantization (QLoRA, arXiv 2305.14314)"),
    Alias("BNB_NF4", "NF4sFP32@64", "bitsandbytes NF4 (as NF4)"),
    Alias("IF4", "E2M1|INT4sE4M3",
          "IF4-like: per block the better of E2M1 and INT4x6/7, selection in the E4M3 scale's sign bit"),
    Alias("Q4_0", "Q4sFP16@32:ggml:tnone",
          "llama.cpp Q4_0: 4-bit ints -8..7, FP16 scale per 32, block max -> -8 (ggml-quants.c)"),
    Alias("Q5_0", "Q5sFP16@32:ggml:tnone",
          "llama.cpp Q5_0: 5-bit ints -16..15, FP16 scale per 32, block max -> -16 (ggml-quants.c)"),
    Alias("Q8_0", "INT8sFP16@32:ggml:tnone",
          "llama.cpp Q8_0: int8 -127..127, FP16 scale per 32, absmax -> 127 (ggml-quants.c)"),
)

AMBIGUOUS: dict[str, tuple[str, ...]] = {
    "MXFP6": ("MXFP6_E2M3", "MXFP6_E3M2"),
    "MXFP8": ("MXFP8_E4M3", "MXFP8_E5M2"),
}
"""Names that stand for several formats: the user has to pick one."""


def _key(name: str) -> str:
    return "".join(ch for ch in name.upper() if ch not in "-_ ")


_BY_KEY = {_key(a.name): a for a in ALIASES}


def lookup(name: str) -> Alias | None:
    """The alias called ``name`` (case-insensitive, ``-``/``_``/space ignored), or None."""
    return _BY_KEY.get(_key(name))


def ambiguous(name: str) -> tuple[str, ...]:
    """The aliases a family name such as ``MXFP6`` could mean (empty if it is not one)."""
    return AMBIGUOUS.get(_key(name), ())


def suggest(name: str, n: int = 3) -> list[str]:
    """Aliases close to ``name``, best first (for an unknown-name error)."""
    keys = difflib.get_close_matches(_key(name), list(_BY_KEY) + list(AMBIGUOUS), n=n, cutoff=0.6)
    return [_BY_KEY[k].name if k in _BY_KEY else k for k in keys]


def aliases_of(canonical: str) -> list[str]:
    """Every alias of a canonical candidate name, e.g. ``NVFP4`` for ``E2M1sE4M3``."""
    return [a.name for a in ALIASES if a.canonical == canonical]
