"""``dse cost`` through main(), as a user runs it."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from dse.cli import main
from dse.commands import cost


def _json(capsys, argv: list[str]):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_json_per_candidate_and_decode_path(capsys):
    out = _json(capsys, ["cost", "E2M3sUE4M4", "NF4sFP32@64", "--hardware", "HbM3", "--json"])
    assert out["hardware"] == "HBM3"
    assert [(r["candidate"], r["decode"]) for r in out["costs"]] == [
        ("E2M3sUE4M4", "direct"), ("E2M3sUE4M4", "lut"), ("NF4sFP32@64", "lut")]
    for r in out["costs"]:
        assert {"candidate", "bpw", "energy_pj_per_weight", "decode_area_mm2", "lut_bits"} <= set(r)
    assert out["costs"][0]["bpw"] == 6.5 and out["costs"][1]["lut_bits"] == 512 and "explain" not in out


def test_json_with_model(capsys):
    out = _json(capsys, ["cost", "E2M1sUE8M0@32", "--hardware", "lpddr5x", "--model", "llama-3.1-8b", "--json"])
    record = out["costs"][0]
    assert record["model"] == "llama-3.1-8b"
    assert record["tokens_per_s"] == pytest.approx(68.264e9 / record["bytes_per_token"])
    assert record["energy_j_per_token"] > record["bytes_per_token"] * 8 * 8.0e-12  # DRAM + datapath


def test_explain_json_gives_every_number_a_source(capsys):
    out = _json(capsys, ["cost", "E2M1sE4M3@16", "NF4|INT4sUE4M4", "--hardware", "gddr7", "--explain", "--json"])
    rows = out["explain"]
    assert {"horowitz_int_mult_8b_pj", "rf_read_32_entries_fj_per_bit", "memory GDDR7 energy", "batch"} <= {
        r["name"] for r in rows}
    assert all(isinstance(r["value"], float) and r["source"].strip() for r in rows)


def test_explain_table_gives_every_number_a_source(monkeypatch):
    buffer = io.StringIO()  # wide enough for one table row per line
    monkeypatch.setattr(cost, "console", lambda: Console(width=1000, file=buffer, color_system=None))
    assert main(["cost", "E4M3sUE8M0@layer", "--hardware", "hbm3e", "--explain"]) == 0
    text = buffer.getvalue()
    table = text[text.index("Every number used, and its source"):]
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert len(rows) > 20
    for line in rows:
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        assert re.fullmatch(r"-?[\d.e+-]+", cells[1]), line  # a number ...
        assert len(cells[4]) > 10, line  # ... and its source
    assert "[secondary + inference, docs/hwcost.md §1e]" in text  # sources are printed, not read as markup


def test_tables_render_with_units(capsys):
    assert main(["cost", "E2M1sE4M3@16", "--hardware", "hbm3", "--model", "smollm2-135m"]) == 0
    text = capsys.readouterr().out
    for header in ("[pJ/weight]", "[mm²]", "tokens/s", "J/token"):
        assert header in text


@pytest.mark.parametrize(("argv", "text"), [
    (["cost", "E2M3sUE4M4", "--hardware", "hbm9"], "dse: error: unknown hardware preset 'hbm9'"),
    (["cost", "E2M3sUE4M4", "--hardware", "hbm3", "--model", "llama-9"], "dse: error: unknown model 'llama-9'"),
    (["cost", "Q9sUE4M4", "--hardware", "hbm3"], "dse: error: candidate 'Q9sUE4M4'"),
])
def test_errors_are_one_line(capsys, argv, text):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(text) and err.count("\n") == 1


def test_bad_yaml_names_file_and_field(capsys, tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text("memory: hbm3\nbuffer_kib: big\n")
    assert main(["cost", "E2M3sUE4M4", "--hardware", str(path)]) == 2
    assert capsys.readouterr().err == f"dse: error: {path}: buffer_kib: must be a number (got 'big')\n"
