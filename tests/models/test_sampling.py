"""Sampled measurement: exact quantization of sampled rows, unbiased totals with 95 % CIs."""

import json
from dataclasses import astuple

import numpy as np
import pytest

from dse.cli import main
from dse.measurement import TOTAL, measure_source
from models.sampling import EXACT_LIMIT_ELEMENTS, REPLICATES, SampledStats, auto_fraction, sample_tensor
from models.sources import open_source
from models.synthetic import ROW_GROUP_ROWS, SyntheticSource, SyntheticTensor
from quant import fit_grids, measure, parse_candidate


CANDIDATES = [parse_candidate(n) for n in ("E2M3sUE4M4", "E2M1sE4M3", "E4M3sUE8M0@layer")]
OUTLIER = "encoder.layer.0.output.dense.weight"  # MiniLM: one 175-sigma element (docs/weights.md)
DOWN = "model.layers.0.mlp.down_proj.weight"


def small_model():
    """Three llm-like tensors just above EXACT_TENSOR_ELEMENTS, so that they are sampled."""
    tensors = [SyntheticTensor(DOWN, "down", (1024, 4096)),
               SyntheticTensor("model.layers.0.self_attn.o_proj.weight", "o", (2048, 2048)),
               SyntheticTensor("model.layers.0.mlp.up_proj.weight", "up", (4096, 1024))]
    return SyntheticSource("llm-like", tensors, 0, "small")


def test_auto_fraction():
    assert auto_fraction(EXACT_LIMIT_ELEMENTS) is None
    assert 0 < auto_fraction(8 * 10**9) < 0.02


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.name)
def test_anchor_row_makes_sampled_groups_quantize_as_in_the_whole_tensor(candidate):
    # The premise of models/sampling.py: with the absmax row prepended (and its error taken off),
    # the row groups' errors add up to the whole tensor's.
    w = open_source("minilm").load(OUTLIER)
    top = int(np.argmax(np.abs(w).max(axis=1)))
    anchor = w[top:top + 1]
    groups = [w[g:g + ROW_GROUP_ROWS] for g in range(0, w.shape[0], ROW_GROUP_ROWS)]
    alone = measure(anchor, candidate)
    certain = top // ROW_GROUP_ROWS
    total = sum((measure(np.concatenate([anchor, g]), candidate).sum_d2 - alone.sum_d2
                 for i, g in enumerate(groups) if i != certain), measure(groups[certain], candidate).sum_d2)
    assert total == pytest.approx(measure(w, candidate).sum_d2, rel=1e-9)


def test_without_the_anchor_the_error_changes():
    # UE4M4 scales span 2^-16..~2^15 only: the FP32 tensor factor that places them depends on the
    # tensor's absmax, so groups quantized alone (their own absmax) give another error
    candidate = CANDIDATES[0]
    w = open_source("minilm").load(OUTLIER)
    naive = sum(measure(w[g:g + ROW_GROUP_ROWS], candidate).sum_d2 for g in range(0, w.shape[0], ROW_GROUP_ROWS))
    assert naive != pytest.approx(measure(w, candidate).sum_d2, rel=1e-3)


def minilm():
    return open_source("minilm")


@pytest.mark.parametrize(("make_source", "name", "fraction"), [
    (minilm, "encoder.layer.2.attention.self.query.weight", 0.01),  # below EXACT_TENSOR_ELEMENTS
    (small_model, DOWN, 1.0)], ids=["small", "full"])
def test_small_tensors_and_full_samples_are_measured_exactly(make_source, name, fraction):
    source = make_source()
    info = next(i for i in source.infos() if i.name == name)
    result = sample_tensor(source, info, CANDIDATES[:1], fraction)[0]
    # Row groups are summed in another order than measure's chunks: equal to float64 rounding.
    np.testing.assert_allclose(astuple(result.estimate), astuple(measure(source.load(info.name), CANDIDATES[0])),
                               rtol=1e-12)
    low, high = result.rel_mse_ci95
    assert low == pytest.approx(result.estimate.rel_mse, rel=1e-12) == high


@pytest.mark.parametrize(("make_source", "name"), [(minilm, OUTLIER), (small_model, DOWN)], ids=["minilm", "llm-like"])
def test_confidence_intervals_cover_the_exact_error(make_source, name):
    source = make_source()
    info = next(i for i in source.infos() if i.name == name)
    w = source.load(name)
    exact = [measure(w, c) for c in CANDIDATES]
    covered, trials = 0, 0
    for seed in range(8):
        for est, ex in zip(sample_tensor(source, info, CANDIDATES, 0.02, seed=seed), exact, strict=True):
            lo, hi = est.rel_mse_ci95
            covered += lo <= ex.rel_mse <= hi
            trials += 1
            assert est.estimate.numel == info.numel and len(est.replicates) == REPLICATES
            assert abs(est.estimate.rel_mse / ex.rel_mse - 1) < 0.05
            assert hi - lo < 0.25 * ex.rel_mse  # rows holding outliers make some groups heavy
    assert covered >= 0.8 * trials  # nominal 95 %


def test_sampled_totals_merge_replicates():
    source = small_model()
    rows = measure_source(source, CANDIDATES[:1], sample_fraction=0.01)
    assert all(m.sample is not None and m.sample.replicates[0] != m.sample.replicates[1] for m in rows)
    total = next(m for m in rows if m.tensor == TOTAL)
    assert isinstance(total.sample, SampledStats) and total.numel == sum(i.numel for i in source.infos())
    lo, hi = total.sample.rel_mse_ci95
    assert lo < total.stats.rel_mse < hi
    record = total.record()
    assert record["rel_mse_ci95"] == [lo, hi]


def test_cli_sample_option(capsys):
    args = ["measure", "E2M3sUE4M4", "--weights", "synthetic:laplace", "--shape", "2048x2048", "--sample", "0.05"]
    assert main(args + ["--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    lo, hi = records[0]["rel_mse_ci95"]
    assert records[-1]["tensor"] == TOTAL and lo < records[0]["rel_mse"] < hi
    assert main(args) == 0
    assert "95% CI" in capsys.readouterr().out
    assert main(["measure", "E2M3sUE4M4", "--weights", "minilm", "--sample", "2"]) == 2
    assert "--sample '2'" in capsys.readouterr().err


@pytest.mark.slow
def test_llama_8b_synthetic_sampled_end_to_end(capsys):
    assert main(["measure", "E2M3sUE4M4", "--weights", "llama-3.1-8b:synthetic", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    total = records[-1]
    assert total["numel"] == 8_030_261_248 - 266_240  # every matrix, not the norms
    lo, hi = total["rel_mse_ci95"]
    assert lo < total["rel_mse"] < hi and hi - lo < 0.01 * total["rel_mse"]


def test_learned_grids_are_fitted_once_per_sampled_tensor(monkeypatch):
    """One DD4 fit per tensor (on the sample), applied to all REPLICATES + 2 sub-measurements."""
    import quant.engine

    fits = []
    real = quant.engine._fit_learned
    monkeypatch.setattr(quant.engine, "_fit_learned", lambda w, plan, threads: fits.append(w.shape) or real(w, plan, threads))
    source = small_model()
    info = next(i for i in source.infos() if i.name == DOWN)
    dd4 = parse_candidate("NF4|DD4sUE4M4")
    sampled = sample_tensor(source, info, [dd4], 0.05, seed=0)[0]
    assert len(fits) == 1 and fits[0][0] > REPLICATES * ROW_GROUP_ROWS  # the whole sample, once
    assert sampled.estimate.numel == info.numel
    lo, hi = sampled.rel_mse_ci95
    assert lo < sampled.estimate.rel_mse < hi


def test_measure_with_fitted_grids_equals_fitting_inside():
    w = open_source("minilm").load(OUTLIER)
    for name in ("NF4|DD4sUE4M4", "DD4sUE4M4:aw", "E2M3sUE4M4"):
        c = parse_candidate(name)
        act = np.linspace(0.5, 2.0, w.shape[1])
        assert astuple(measure(w, c, act=act, grids=fit_grids(w, c, act=act))) == astuple(measure(w, c, act=act))
