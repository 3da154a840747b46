"""Synthetic weights: seeded, row-subset exact, known absmax row, calibrated to MiniLM."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.cli import main
from models.catalog import UnknownModelError, get_model
from models.roles import role_of
from models.sources import open_source
from models.synthetic import KINDS, SyntheticSource, SyntheticTensor
from models.errors import SourceError

SMALL = [SyntheticTensor("model.layers.0.mlp.down_proj.weight", "down", (100, 256)),
         SyntheticTensor("model.layers.0.self_attn.q_proj.weight", "q", (64, 64))]


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_and_reproducible(kind):
    a, b, c = (SyntheticSource(kind, SMALL, seed, "t") for seed in (0, 0, 1))
    name = SMALL[0].name
    np.testing.assert_array_equal(a.load(name), b.load(name))
    assert not np.array_equal(a.load(name), c.load(name))
    assert not np.array_equal(a.load(name)[:64, :64], a.load(SMALL[1].name))  # seeded per tensor name


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(KINDS), rows=st.lists(st.integers(0, 99), min_size=1, max_size=40))
def test_any_row_subset_equals_the_same_rows_of_the_whole_tensor(kind, rows):
    source = SyntheticSource(kind, SMALL, 5, "t")
    name = SMALL[0].name
    np.testing.assert_array_equal(source.load_rows(name, np.array(rows)), source.load(name)[rows])


@pytest.mark.parametrize("kind", KINDS)
def test_absmax_row_is_known_without_generating(kind):
    source = open_source(f"smollm2-135m:synthetic:{kind}", seed=2)
    for info in source.infos()[1:9]:
        row_absmax = np.abs(source.load(info.name)).max(axis=1)
        assert np.argmax(row_absmax) == source.absmax_row(info.name)
        assert np.count_nonzero(row_absmax == row_absmax.max()) == 1, "the pinned extreme is unique"


@pytest.mark.parametrize(("kind", "kurtosis"), [("gaussian", (-0.1, 0.1)), ("laplace", (2.6, 3.3)),
                                                ("student-t", (3.0, 7.0))])
def test_iid_kinds_have_their_distribution(kind, kurtosis):
    w = SyntheticSource(kind, [SyntheticTensor("x", "other", (1024, 1024))], 0, "t").load("x").astype(np.float64)
    w *= np.sqrt(1024)  # sigma = 1/sqrt(in_features)
    assert abs(w.std() - 1) < 0.02 and abs(w.mean()) < 0.01
    excess = np.mean(w**4) / np.mean(w**2) ** 2 - 3  # student-t nu=5: 6 before clipping, noisy
    assert kurtosis[0] < excess < kurtosis[1]


def test_model_spec_lists_every_matrix_with_experts_expanded():
    source = open_source("mixtral-8x7b:synthetic")
    names = [i.name for i in source.infos()]
    model = get_model("mixtral-8x7b")
    assert names == [n for t in model.tensors for n in t.instance_names()] and len(names) == 930
    assert sum(i.numel for i in source.infos()) == model.linear_params


def test_bad_synthetic_specs_fail_in_one_line(capsys):
    with pytest.raises(SourceError, match="unknown; use one of gaussian, laplace, student-t, llm-like"):
        open_source("llama-3.1-8b:synthetic:cauchy")
    with pytest.raises(UnknownModelError, match="did you mean llama-3.1-8b"):
        open_source("llama-3.1-8:synthetic")
    assert main(["measure", "E2M3sUE4M4", "--weights", "llama-3.1-8:synthetic"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# --- calibration against the real MiniLM weights (module docstring of models/synthetic.py) ---

def _stats(w):
    w = w.astype(np.float64)
    z = (w - w.mean()) / w.std()
    blocks = np.abs(w.reshape(-1, 16))
    absmax = blocks.max(axis=1)
    return {"kurtosis": float(np.mean(z**4) - 3),
            "crest": float(np.mean(absmax / np.sqrt(np.mean(blocks**2, axis=1)))),
            "scale_spread": float(np.std(np.log2(absmax)))}


def _role_medians(source, names):
    by_role = {}
    for name in names:
        by_role.setdefault(role_of(name), []).append(_stats(source.load(name)))
    return {role: {k: float(np.median([s[k] for s in rows])) for k in rows[0]} for role, rows in by_role.items()}


@pytest.fixture(scope="module")
def minilm_medians():
    real = open_source("minilm")
    infos = [i for i in real.infos() if i.name.startswith("encoder.")]
    tensors = [SyntheticTensor(i.name, role_of(i.name), i.shape) for i in infos]
    names = [i.name for i in infos]
    return tensors, names, _role_medians(real, names)


# Tolerances on the per-role median over MiniLM's 6 layers. For scale: Gaussian data gives crest
# 2.11 and scale spread 0.34 where MiniLM has 2.11-2.20 and 0.38-0.61.
CREST_TOL, SPREAD_TOL, KURTOSIS_TOL, DOWN_KURTOSIS_FACTOR = 0.05, 0.06, 0.5, 3.0


def _mismatches(real, synthetic):
    bad = []
    for role, r in real.items():
        s = synthetic[role]
        if abs(s["crest"] - r["crest"]) > CREST_TOL:
            bad.append((role, "crest", r["crest"], s["crest"]))
        if abs(s["scale_spread"] - r["scale_spread"]) > SPREAD_TOL:
            bad.append((role, "scale_spread", r["scale_spread"], s["scale_spread"]))
        if role == "down":  # dominated by a few huge outliers (MiniLM: 13 to 1582)
            if not r["kurtosis"] / DOWN_KURTOSIS_FACTOR <= s["kurtosis"] <= r["kurtosis"] * DOWN_KURTOSIS_FACTOR:
                bad.append((role, "kurtosis", r["kurtosis"], s["kurtosis"]))
        elif abs(s["kurtosis"] - r["kurtosis"]) > KURTOSIS_TOL:
            bad.append((role, "kurtosis", r["kurtosis"], s["kurtosis"]))
    return bad


def test_llm_like_reproduces_minilm_statistics(minilm_medians):
    tensors, names, real = minilm_medians
    synthetic = _role_medians(SyntheticSource("llm-like", tensors, 0, "t"), names)
    assert _mismatches(real, synthetic) == []
    # heavier tails in o/down than in q/k/v/up, as in the real weights
    assert synthetic["down"]["kurtosis"] > 10 * max(synthetic[r]["kurtosis"] for r in ("q", "k", "v", "up", "o"))
    assert synthetic["o"]["scale_spread"] > synthetic["q"]["scale_spread"] + 0.1


def test_gaussian_weights_fail_the_same_comparison(minilm_medians):
    tensors, names, real = minilm_medians
    gaussian = _role_medians(SyntheticSource("gaussian", tensors, 0, "t"), names)
    failed = {(role, stat) for role, stat, _, _ in _mismatches(real, gaussian)}
    assert {("o", "scale_spread"), ("down", "kurtosis")} <= failed
