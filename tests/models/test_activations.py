"""Activation statistics: llama.cpp imatrix (GGUF and legacy .dat), vector files, mapping to tensors."""

import struct

import numpy as np
import pytest

from models.activations import ActivationStats, load_activations, read_imatrix_dat
from models.source import TensorInfo
from models.errors import SourceError
from tests.models.files import truncate, write_gguf, write_safetensors

RNG = np.random.default_rng(11)
SUMS_Q = RNG.uniform(0, 50, 64).astype(np.float32)           # blk.0.attn_q: 1 matrix, 64 inputs
SUMS_EXPERTS = RNG.uniform(0, 50, (4, 32)).astype(np.float32)  # blk.1.ffn_up_exps: 4 experts, 32 inputs
COUNTS_EXPERTS = np.array([[8.0], [0.0], [2.0], [6.0]], np.float32)  # expert 1 saw no tokens


def write_imatrix_gguf(path):
    """Same keys and tensor naming as llama.cpp's save_imatrix (tools/imatrix/imatrix.cpp):
    general.type, imatrix.datasets/chunk_count/chunk_size; <weight>.in_sum2 (n_mat x n) and
    <weight>.counts (n_mat x 1). A single-matrix entry is 1-D in the file (ggml drops trailing 1s)."""
    write_gguf(path, {
        "blk.0.attn_q.weight.in_sum2": SUMS_Q, "blk.0.attn_q.weight.counts": np.array([16.0], np.float32),
        "blk.1.ffn_up_exps.weight.in_sum2": SUMS_EXPERTS, "blk.1.ffn_up_exps.weight.counts": COUNTS_EXPERTS,
    }, kv={"general.type": "imatrix", "imatrix.datasets": ["calibration.txt"], "imatrix.chunk_count": 4,
           "imatrix.chunk_size": 512}, arch=None)


def write_imatrix_dat(path, entries, chunks=4, dataset=b"calibration.txt"):
    """llama.cpp save_imatrix_legacy: values stored as mean * ncall."""
    out = struct.pack("<i", len(entries))
    for name, ncall, mean in entries:
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, mean.size)
        out += (mean * ncall).astype("<f4").tobytes()
    out += struct.pack("<i", chunks) + struct.pack("<i", len(dataset)) + dataset
    path.write_bytes(out)


def test_gguf_imatrix_means_and_hf_mapping(tmp_path):
    path = tmp_path / "imatrix.gguf"
    write_imatrix_gguf(path)
    stats = load_activations(str(path))
    np.testing.assert_allclose(stats.for_tensor("blk.0.attn_q.weight", 64), SUMS_Q / 16.0, rtol=1e-7)
    # HF names of the same layer: q by role, k and v through the shared input of attention
    for proj in ("q_proj", "k_proj", "v_proj"):
        np.testing.assert_allclose(stats.for_tensor(f"model.layers.0.self_attn.{proj}.weight", 64), SUMS_Q / 16)
    np.testing.assert_allclose(stats.for_tensor("model.layers.1.block_sparse_moe.experts.3.w3.weight", 32),
                               SUMS_EXPERTS[3] / 6.0, rtol=1e-7)
    np.testing.assert_allclose(stats.for_tensor("blk.1.ffn_gate_exps.weight[2]", 32), SUMS_EXPERTS[2] / 2.0, rtol=1e-7)
    assert stats.for_tensor("blk.1.ffn_up_exps.weight[1]", 32) is None  # no tokens reached expert 1
    assert stats.for_tensor("blk.0.ffn_down.weight", 64) is None
    with pytest.raises(SourceError, match="64 entries, tensor 'blk.0.attn_q.weight' has 48 input channels"):
        stats.for_tensor("blk.0.attn_q.weight", 48)


def test_gguf_imatrix_without_counts_or_truncated(tmp_path):
    path = tmp_path / "bad.gguf"
    write_gguf(path, {"blk.0.attn_q.weight.in_sum2": SUMS_Q}, arch=None)
    with pytest.raises(SourceError, match="blk.0.attn_q.weight.counts"):
        load_activations(str(path))
    good = tmp_path / "imatrix.gguf"
    write_imatrix_gguf(good)
    truncate(good, good.stat().st_size - 24)  # past the 16 bytes of alignment padding
    with pytest.raises(SourceError) as err:
        load_activations(str(good))
    assert "truncated" in str(err.value) and "counts" in str(err.value)


def test_legacy_dat_round_trip_and_mapping(tmp_path):
    q, down = RNG.uniform(0, 3, 64).astype(np.float32), RNG.uniform(0, 3, 128).astype(np.float32)
    path = tmp_path / "imatrix.dat"
    write_imatrix_dat(path, [("blk.0.attn_q.weight", 10, q), ("blk.0.ffn_down.weight", 7, down)])
    stats = read_imatrix_dat(path)
    np.testing.assert_allclose(stats.for_tensor("blk.0.attn_q.weight", 64), q, rtol=1e-6)
    infos = [TensorInfo("model.layers.0.mlp.down_proj.weight", (64, 128), "F32"),
             TensorInfo("model.layers.0.self_attn.o_proj.weight", (64, 64), "F32")]
    mapped = stats.map_to(infos)
    assert list(mapped) == ["model.layers.0.mlp.down_proj.weight"]
    np.testing.assert_allclose(mapped["model.layers.0.mlp.down_proj.weight"], down, rtol=1e-6)


def test_truncated_legacy_dat_names_the_entry(tmp_path):
    path = tmp_path / "imatrix.dat"
    write_imatrix_dat(path, [("blk.0.attn_q.weight", 10, np.ones(64, np.float32)),
                             ("blk.0.ffn_down.weight", 7, np.ones(128, np.float32))])
    truncate(path, 4 + 4 + 19 + 8 + 256 + 4 + 21 + 8 + 100)
    with pytest.raises(SourceError) as err:
        load_activations(str(path))
    assert str(path) in str(err.value) and "'blk.0.ffn_down.weight'" in str(err.value)
    path.write_bytes(b"\xff\xff\xff\x7f" + bytes(8))
    with pytest.raises(SourceError, match="corrupt imatrix"):
        load_activations(str(path))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_vector_files(tmp_path, suffix):
    vectors = {"model.layers.2.mlp.down_proj.weight": RNG.uniform(0, 1, 96).astype(np.float32),
               "model.layers.2.self_attn.q_proj": RNG.uniform(0, 1, 32).astype(np.float32)}
    path = tmp_path / f"act{suffix}"
    if suffix == ".npz":
        np.savez(path, **vectors)
    else:
        write_safetensors(path, {k: ("F32", v) for k, v in vectors.items()})
    stats = load_activations(str(path))
    np.testing.assert_array_equal(stats.for_tensor("model.layers.2.mlp.down_proj.weight", 96),
                                  vectors["model.layers.2.mlp.down_proj.weight"])
    # key without ".weight", reached by name and by GGUF name of the same layer and input
    np.testing.assert_array_equal(stats.for_tensor("model.layers.2.self_attn.q_proj.weight", 32),
                                  vectors["model.layers.2.self_attn.q_proj"])
    np.testing.assert_array_equal(stats.for_tensor("blk.2.attn_v.weight", 32),
                                  vectors["model.layers.2.self_attn.q_proj"])


def test_vector_files_reject_negative_values(tmp_path):
    path = tmp_path / "act.npz"
    np.savez(path, w=np.array([1.0, -1.0]))
    with pytest.raises(SourceError) as err:
        load_activations(str(path))
    assert str(err.value) == f"{path}: 'w' has 1 NaN, Inf or negative values; regenerate the statistics"
    assert isinstance(ActivationStats("x", {}).map_to([]), dict)


# Issue 14, kind 7: a NaN (or Inf, or negative) statistic that counted tokens is an error in every
# format alike; only a zero token count means "no statistics".

def test_gguf_imatrix_nan_with_tokens_is_rejected(tmp_path):
    sums = SUMS_EXPERTS.copy()
    sums[2, 5] = np.nan  # expert 2 counted 2 tokens
    path = tmp_path / "nan.gguf"
    write_gguf(path, {"blk.1.ffn_up_exps.weight.in_sum2": sums, "blk.1.ffn_up_exps.weight.counts": COUNTS_EXPERTS},
               arch=None)
    with pytest.raises(SourceError) as err:
        load_activations(str(path))
    assert str(err.value) == (f"{path}: 'blk.1.ffn_up_exps.weight' has 1 NaN, Inf or negative values "
                              "(matrix 2, 2 tokens); regenerate the statistics")


def test_gguf_imatrix_nan_without_tokens_means_no_statistics(tmp_path):
    sums = SUMS_EXPERTS.copy()
    sums[1, :] = np.nan  # expert 1 counted no tokens: whatever its sums hold, it has no statistics
    path = tmp_path / "zero.gguf"
    write_gguf(path, {"blk.1.ffn_up_exps.weight.in_sum2": sums, "blk.1.ffn_up_exps.weight.counts": COUNTS_EXPERTS},
               arch=None)
    stats = load_activations(str(path))
    assert stats.for_tensor("blk.1.ffn_up_exps.weight[1]", 32) is None
    np.testing.assert_allclose(stats.for_tensor("blk.1.ffn_up_exps.weight[3]", 32), SUMS_EXPERTS[3] / 6.0, rtol=1e-7)


def test_gguf_imatrix_negative_counts_are_rejected(tmp_path):
    path = tmp_path / "neg.gguf"
    write_gguf(path, {"blk.0.attn_q.weight.in_sum2": SUMS_Q, "blk.0.attn_q.weight.counts": np.array([-1.0], np.float32)},
               arch=None)
    with pytest.raises(SourceError) as err:
        load_activations(str(path))
    assert str(err.value) == (f"{path}: 'blk.0.attn_q.weight.counts' holds NaN, Inf or negative counts; "
                              "regenerate the imatrix")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
def test_legacy_dat_bad_values_are_rejected(tmp_path, bad):
    values = np.ones(64, np.float32)
    values[[3, 9]] = bad
    path = tmp_path / "imatrix.dat"
    write_imatrix_dat(path, [("blk.0.attn_q.weight", 10, np.ones(64, np.float32)), ("blk.0.ffn_up.weight", 4, values)])
    with pytest.raises(SourceError) as err:
        load_activations(str(path))
    assert str(err.value) == (f"{path}: 'blk.0.ffn_up.weight' has 2 NaN, Inf or negative values (4 calls); "
                              "regenerate the statistics")


def test_vector_file_nan_is_rejected_like_the_imatrix(tmp_path):
    values = np.ones(32, np.float32)
    values[0] = np.nan
    path = tmp_path / "act.safetensors"
    write_safetensors(path, {"blk.0.ffn_up.weight": ("F32", values)})
    with pytest.raises(SourceError) as err:
        load_activations(str(path))
    assert str(err.value) == f"{path}: 'blk.0.ffn_up.weight' has 1 NaN, Inf or negative values; regenerate the statistics"
