"""Weights near the ends of float32's range (issue 14, kind 2): metrics and choices stay exact.

Multiplying a tensor by a power of two scales every FP32 tensor factor, every product and every
residual exactly, so quantization must give the same codes, block choices and relative error as
on the unscaled tensor. The right relative error is also recomputed independently here, in
float64, from the decoded tensor.
"""

from __future__ import annotations

import numpy as np
import pytest

import quant

# 2**-73 ~ 1.06e-22 (squares ~1e-44 flush in float32) and 2**123 ~ 1.06e37 (squares overflow).
SCALES = (2.0**-73, 2.0**123)
NAMES = ("E2M3sUE4M4", "E2M1sUE8M0@32", "E4M3sUE8M0@layer", "NF4|DD4sUE4M4", "E2M1|INT4sE4M3",
         "E2M1sE4M3:mse", "E2M1sE4M3:4o6", "E2M1sE4M3+opq(0.95)", "E2M1sE4M3+res(1%)", "NF4sUE4M4:aw")


def _weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(14)
    w = rng.standard_t(4, size=(48, 128)).astype(np.float32)
    return w, rng.uniform(0.1, 3.0, size=128)


def _f64_stats(w: np.ndarray, w_hat: np.ndarray) -> tuple[float, float]:
    """(relative MSE, 1 - cosine) in float64 from scratch."""
    a, b = w.astype(np.float64).ravel(), w_hat.astype(np.float64).ravel()
    # Rescale by the largest magnitude first: float64 squares of 1e-22 are fine, but this keeps
    # the reference independent of the code under test's own handling.
    top = np.abs(a).max()
    a, b = a / top, b / top
    rel = np.sum((b - a) ** 2) / np.sum(a * a)
    cos = np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(rel), float(1.0 - cos)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", SCALES)
def test_scaled_tensor_quantizes_like_the_unscaled_one(name, scale):
    w, h = _weights()
    c = quant.parse_candidate(name)
    act = h if c.act_weighted else None
    base = quant.quantize(w, c, act=act)
    scaled = quant.quantize(w * np.float32(scale), c, act=act)
    np.testing.assert_array_equal(scaled.codes, base.codes)
    np.testing.assert_array_equal(scaled.grid_index, base.grid_index)
    np.testing.assert_array_equal(scaled.sparse_index, base.sparse_index)
    np.testing.assert_array_equal(quant.dequantize(scaled), quant.dequantize(base) * np.float32(scale))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", SCALES)
def test_metrics_are_exact_at_both_ends(name, scale):
    w, h = _weights()
    w = w * np.float32(scale)
    c = quant.parse_candidate(name)
    act = h if c.act_weighted else None
    stats = quant.measure(w, c, act=act)
    rel, deficit = _f64_stats(w, quant.dequantize(quant.quantize(w, c, act=act)))
    assert rel > 1e-5
    assert stats.rel_mse == pytest.approx(rel, rel=1e-6)
    assert stats.cos_deficit_ppm == pytest.approx(1e6 * deficit, rel=1e-4)
    assert np.isfinite(stats.sqnr_db) and stats.sqnr_db > 0
    unscaled = quant.measure(w / np.float32(scale), c, act=act)
    assert stats.rel_mse == pytest.approx(unscaled.rel_mse, rel=1e-6)
    assert stats.second_grid_fraction == unscaled.second_grid_fraction
    assert stats.sparse == unscaled.sparse


@pytest.mark.parametrize("scale", SCALES)
def test_weighted_metrics_at_both_ends(scale):
    w, h = _weights()
    c = quant.parse_candidate("E2M3sUE4M4")
    stats = quant.measure(w * np.float32(scale), c, act=h)
    base = quant.measure(w, c, act=h)
    assert stats.act_rel_mse == pytest.approx(base.act_rel_mse, rel=1e-9)
    assert stats.acos_deficit_ppm == pytest.approx(base.acos_deficit_ppm, rel=1e-6)


def test_explore_rel_mse_on_tiny_and_huge_tensors(tmp_path):
    """``metric: rel_mse`` over a 1e-22 tensor and a 1e37 tensor: each uniform baseline's error is
    the sum of numel x relative MSE measured on the same tensors at unit scale."""
    import json

    import yaml

    from dse.cli import main
    from tests.models.files import write_safetensors

    rng = np.random.default_rng(7)
    tiny, huge = (rng.standard_normal((32, 64)).astype(np.float32) for _ in range(2))
    write_safetensors(tmp_path / "m.safetensors", {"a.tiny.weight": ("F32", tiny * np.float32(2.0**-73)),
                                                   "a.huge.weight": ("F32", huge * np.float32(2.0**123))})
    names = ["E2M3sUE4M4", "E2M1sE4M3"]
    doc = {"model": {"weights": "m.safetensors"}, "candidates": {"names": names},
           "hardware": {"preset": "lpddr5x"}, "objective": {"metric": "rel_mse"},
           "budgets": {"bpw": [4.6, 6.5]}, "output": {"dir": "out", "plot": False}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    assert main(["explore", str(tmp_path / "s.yaml"), "--jobs", "1"]) == 0
    baselines = json.loads((tmp_path / "out" / "pareto.json").read_text())["baselines"]
    for name in names:
        c = quant.parse_candidate(name)
        want = sum(x.size * quant.measure(x, c).rel_mse for x in (tiny, huge))
        got = next(b["error"] for b in baselines if b["candidate"] == name)
        assert got == pytest.approx(want, rel=1e-6)
