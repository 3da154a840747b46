"""Hardware presets and YAML files: what loads, and the one-line errors for what does not."""

from __future__ import annotations

import pytest

from hwcost import HardwareError, load_hardware, preset
from hwcost.explain import explain


def test_presets_are_case_insensitive():
    assert load_hardware("hbm3") == load_hardware("HBM3") == preset("HbM3")
    with pytest.raises(HardwareError, match=r"unknown hardware preset 'hbm9' \(known: HBM3, HBM3E, LPDDR5X"):
        load_hardware("hbm9")


def test_yaml_file(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_text("memory: {preset: lpddr5x, energy_pj_per_bit: 5.5}\nnode_nm: 5\nbatch: 4\n"
                    "lanes_per_lut_port: 16\nenergy_factor_vs_45nm_0v9: 0.05\n")
    hw = load_hardware(str(path))
    assert hw.name == "edge" and hw.batch == 4 and hw.lut_ports == 16 and hw.tech.node_nm == 5
    assert hw.memory.energy_pj_per_bit == 5.5 and hw.memory.bandwidth_gbyte_per_s == 68.264
    assert hw.memory.energy_source == f"{path}: memory" and "8533 MT/s" in hw.memory.bandwidth_source
    sources = {row.name: row.source for row in explain({"horowitz_int_add_8b_pj"}, hw)}
    assert sources["batch"] == f"{path}: batch" and sources["lanes"].startswith("default:")
    assert sources["energy factor 45 nm 0.9 V -> 5 nm 0.8 V"] == f"{path}: energy_factor_vs_45nm_0v9"


def test_custom_memory(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text("name: box\nmemory: {name: my-dram, bandwidth_gbyte_per_s: 100, energy_pj_per_bit: 4}\n")
    hw = load_hardware(str(path))
    assert (hw.name, hw.memory.name, hw.memory.bandwidth_gbyte_per_s) == ("box", "my-dram", 100)


@pytest.mark.parametrize(("text", "message"), [
    ("memory: hbm3\nlanez: 4\n", "unknown field 'lanez' (known: name, memory, node_nm"),
    ("memory: hbm3\nbatch: four\n", "batch: must be an integer (got 'four')"),
    ("memory: hbm3\nbatch: 0\n", "batch: must be in [1, inf] (got 0)"),
    ("memory: hbm3\nnode_nm: 180\n", "node_nm: must be in [1.0, 130.0] (got 180)"),
    ("memory: hbm3\nlut_output_bits: 4\nlut_output_exponent_bits: 3\n", "lut_output_exponent_bits: must leave"),
    ("batch: 2\n", "memory: missing"),
    ("memory: hbm9\n", "memory: unknown preset 'hbm9'"),
    ("memory: {bandwidth_gbyte_per_s: 10}\n", "memory.energy_pj_per_bit: missing"),
    ("memory: {preset: hbm3, pj: 3}\n", "memory.pj: unknown field"),
    ("- hbm3\n", "expected a mapping of hardware fields"),
    ("memory: [hbm3\n", "not valid YAML"),
])
def test_yaml_errors_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(HardwareError) as err:
        load_hardware(str(path))
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_every_problem_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("memory: hbm3\nbatch: -1\nlanez: 2\n")
    with pytest.raises(HardwareError, match=r"lanez.*; .*batch"):
        load_hardware(str(path))


def test_missing_file():
    with pytest.raises(HardwareError, match="hardware file 'nope.yaml' not found"):
        load_hardware("nope.yaml")
