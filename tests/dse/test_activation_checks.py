"""dse validate checks activation statistics before anything is measured (issue 14, kind 7)."""

from __future__ import annotations

import numpy as np
import yaml

from dse.cli import main
from tests.models.files import write_gguf
from tests.models.test_activations import write_imatrix_gguf


def _scenario(tmp_path, **model):
    rng = np.random.default_rng(3)
    write_gguf(tmp_path / "m.gguf", {
        "blk.0.attn_q.weight": rng.standard_normal((16, 64)).astype(np.float32),
        "blk.0.ffn_down.weight": rng.standard_normal((16, 32)).astype(np.float32),  # not in the imatrix
        "blk.1.ffn_up_exps.weight": rng.standard_normal((4, 16, 32)).astype(np.float32),  # expert 1: 0 tokens
    })
    write_imatrix_gguf(tmp_path / "imatrix.gguf")
    doc = {"model": {"weights": "m.gguf", **model}, "candidates": {"names": ["E2M3sUE4M4"]},
           "hardware": {"preset": "lpddr5x"}, "objective": {"metric": "act_sse"}, "budgets": {"bpw": [6.5]},
           "output": {"dir": "out", "plot": False}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_act_sse_names_the_tensors_without_statistics(tmp_path, capsys):
    path = _scenario(tmp_path, activations="imatrix.gguf")
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"dse: error: {path}: objective.metric: act_sse needs statistics for every tensor, but imatrix.gguf has "
        "none for 2 of 6 (blk.0.ffn_down.weight, blk.1.ffn_up_exps.weight[1]: absent from the file, or MoE "
        "experts no token reached); drop them with model.exclude, regenerate the statistics on text that "
        "reaches them, or use metric sse\n")
    assert main(["explore", str(path)]) == 2  # explore stops at the same check, before measuring
    assert not list((tmp_path / ".dse-cache").rglob("*.json"))


def test_act_sse_passes_once_they_are_excluded(tmp_path, capsys):
    path = _scenario(tmp_path, activations="imatrix.gguf", exclude=r"ffn_down|exps\.weight\[1\]")
    assert main(["validate", str(path)]) == 0


def test_act_sse_without_activations(tmp_path, capsys):
    path = _scenario(tmp_path)
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"dse: error: {path}: objective.metric: act_sse needs model.activations (per-channel statistics); "
        "add them or use metric sse\n")


def test_bad_statistics_are_caught_by_validate(tmp_path, capsys):
    path = _scenario(tmp_path, activations="nan.gguf")
    sums = np.ones((4, 32), np.float32)
    sums[0, 0] = np.nan
    write_gguf(tmp_path / "nan.gguf", {"blk.1.ffn_up_exps.weight.in_sum2": sums,
                                       "blk.1.ffn_up_exps.weight.counts": np.full((4, 1), 3.0, np.float32)}, arch=None)
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"dse: error: {path}: model.activations: {tmp_path / 'nan.gguf'}: 'blk.1.ffn_up_exps.weight' has 1 NaN, "
        "Inf or negative values (matrix 0, 3 tokens); regenerate the statistics\n")
