"""YAML as users write it (issue 14, kind 8): duplicate keys are errors naming both lines, and
every YAML 1.2 number spelling is a number in every file and field."""

from __future__ import annotations

import pytest

from dse.cli import main
from dse.setup import resolve_hardware
from dse.scenario import load_scenario
from hwcost import load_hardware
from hwcost.errors import HardwareError
from quant.yamlfile import YamlError, parse_yaml

SCENARIO = """\
model:
  weights: synthetic:gaussian
candidates:
  names: [E2M3sUE4M4, E2M1sE4M3]
hardware:
  preset: lpddr5x
budgets:
  bpw: [4.5, 6.5]
"""

# (spelling, value): the value is what Python's float() gives for the spelling without "_".
SPELLINGS = ["1e2", "1E2", "1e+2", "+1e2", "1.0e2", "1.e2", "1.0e+2", "100", "100.0", "100.", "1_00", ".1e3",
             "1000e-1", "0.1E+3"]


@pytest.mark.parametrize("text", SPELLINGS)
def test_every_float_spelling_is_a_number(text):
    value = parse_yaml(f"x: {text}\n", "t.yaml")["x"]
    assert not isinstance(value, (str, bool)) and value == float(text.replace("_", ""))


@pytest.mark.parametrize("text", ["E2M1", "1e", "e2", "1.2.3", "0.1.2", "1e2x", "1e2.5", ".", "1_e2_"])
def test_strings_stay_strings(text):
    assert parse_yaml(f"x: {text}\n", "t.yaml")["x"] == text


def test_special_floats_and_ints_keep_their_yaml_meaning():
    doc = parse_yaml("a: .inf\nb: -.Inf\nc: .nan\nd: 0x10\ne: 7\nf: true\ng: null\n", "t.yaml")
    assert doc["a"] == float("inf") and doc["b"] == float("-inf") and doc["c"] != doc["c"]
    assert (doc["d"], doc["e"], doc["f"], doc["g"]) == (16, 7, True, None)
    assert isinstance(doc["e"], int)


@pytest.mark.parametrize("text", SPELLINGS)
def test_hardware_fields_and_budgets_take_every_spelling(tmp_path, text):
    doc = SCENARIO.replace("  preset: lpddr5x\n", f"  preset: lpddr5x\n  fields: {{lanes: {text}, buffer_kib: {text}}}\n")
    doc = doc.replace("bpw: [4.5, 6.5]", f"bpw_range: {{min_bpw: 4.5, max_bpw: {text}, points: 2}}")
    path = tmp_path / "s.yaml"
    path.write_text(doc)
    scenario = load_scenario(path)
    assert scenario.budgets_bpw == (4.5, 100.0)
    hw = resolve_hardware(scenario)
    assert (hw.lanes, hw.buffer_kib) == (100, 100.0) and isinstance(hw.lanes, int)


def test_hardware_file_takes_every_spelling(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text("memory: {preset: hbm3, bandwidth_gbyte_per_s: 1.2e3}\nbatch: 8e0\nvdd_v: 7.5e-1\n")
    hw = load_hardware(str(path))
    assert (hw.memory.bandwidth_gbyte_per_s, hw.batch, hw.tech.vdd_v) == (1200.0, 8, 0.75)


def test_a_fractional_integer_field_is_still_an_error(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text("memory: hbm3\nbatch: 2.5e0\n")
    with pytest.raises(HardwareError, match=r"batch: must be an integer \(got 2.5\)"):
        load_hardware(str(path))


@pytest.mark.parametrize(("text", "line", "first", "what"), [
    (SCENARIO + "budgets:\n  bpw: [5.0]\n", 9, 7, "budgets"),
    (SCENARIO.replace("  names: [E2M3sUE4M4, E2M1sE4M3]\n", "  names: [E2M3sUE4M4]\n  names: [E2M1sE4M3]\n"),
     5, 4, "candidates.names"),
    (SCENARIO.replace("  preset: lpddr5x\n", "  preset: lpddr5x\n  fields: {batch: 2, batch: 4}\n"),
     7, 7, "hardware.fields.batch"),
])
def test_validate_rejects_a_duplicate_key_naming_both_lines(tmp_path, capsys, text, line, first, what):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == (f"dse: error: {path}: line {line}: {what} is given twice "
                                       f"(first at line {first}); keep one\n")


def test_duplicate_keys_inside_lists_name_the_item():
    with pytest.raises(YamlError, match=r"t.yaml: line 3: groups\[0\]\.a is given twice \(first at line 2\)"):
        parse_yaml("groups:\n  - a: 1\n    a: 2\n", "t.yaml")


def test_hardware_file_with_a_duplicate_key(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text("memory: hbm3\nbatch: 2\nbatch: 4\n")
    with pytest.raises(HardwareError) as err:
        load_hardware(str(path))
    assert str(err.value) == f"{path}: line 3: batch is given twice (first at line 2); keep one"


def test_config_with_a_duplicate_key(tmp_path, capsys):
    path = tmp_path / "config-4.5.yaml"
    path.write_text("sop_dse_config: 1\nweights: [minilm]\nweights: [minilm]\nassignment: {a: E2M3sUE4M4}\n")
    assert main(["quantize", str(path), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dse: error: {path}: line 3: weights is given twice (first at line 2)")
    assert err.count("\n") == 1


def test_invalid_yaml_names_the_line(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO + "budgets: [\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dse: error: {path}: line ") and "not valid YAML" in err and err.count("\n") == 1
