"""Sharded HF safetensors (F32/F16/BF16) read back exactly; corrupt files fail in one line."""

import json

import numpy as np
import pytest

from dse.cli import main
from models.safetensors_source import SafetensorsSource
from models.sources import open_source
from models.errors import SourceError
from tests.models.files import bf16_values, to_bf16_bits, truncate, write_safetensors, write_sharded


@pytest.fixture
def checkpoint(tmp_path):
    rng = np.random.default_rng(7)
    f32 = rng.standard_normal((48, 32)).astype(np.float32)
    f16 = rng.standard_normal((16, 64)).astype(np.float16)
    bf16 = to_bf16_bits(rng.standard_normal((32, 32)))
    shards = [
        {"model.layers.0.mlp.down_proj.weight": ("F32", f32), "model.norm.weight": ("F32", f32[0])},
        {"model.layers.0.self_attn.q_proj.weight": ("F16", f16),
         "model.layers.1.self_attn.o_proj.weight": ("BF16", bf16)},
    ]
    write_sharded(tmp_path / "ckpt", shards)
    expected = {"model.layers.0.mlp.down_proj.weight": f32,
                "model.layers.0.self_attn.q_proj.weight": f16.astype(np.float32),
                "model.layers.1.self_attn.o_proj.weight": bf16_values(bf16)}
    return tmp_path / "ckpt", expected


def test_sharded_checkpoint_reads_back_exactly(checkpoint):
    directory, expected = checkpoint
    for spec in (directory, directory / "model.safetensors.index.json"):
        source = open_source(str(spec))
        infos = {i.name: i for i in source.infos()}
        assert set(infos) == set(expected)  # the 1-D norm is not a matrix
        assert infos["model.layers.1.self_attn.o_proj.weight"].stored_dtype == "BF16"
        for name, array in expected.items():
            w = source.load(name)
            assert w.dtype == np.float32 and w.shape == infos[name].shape
            np.testing.assert_array_equal(w, array)


def _one_line_error(exc_info, *parts):
    message = str(exc_info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_truncated_shard_names_file_and_tensor(checkpoint):
    directory, _ = checkpoint
    shard = directory / "model-00002-of-00002.safetensors"
    truncate(shard, shard.stat().st_size - 10)
    with pytest.raises(SourceError) as err:
        open_source(str(directory))
    _one_line_error(err, str(shard), "model.layers.1.self_attn.o_proj.weight", "truncated")


def test_missing_shard_names_it(checkpoint):
    directory, _ = checkpoint
    (directory / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(SourceError) as err:
        open_source(str(directory))
    _one_line_error(err, "model-00001-of-00002.safetensors", "missing", "model.layers.0.mlp.down_proj.weight")


def test_index_naming_a_tensor_its_shard_lacks(checkpoint):
    directory, _ = checkpoint
    index = directory / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(SourceError) as err:
        open_source(str(directory))
    _one_line_error(err, "model.layers.9.mlp.up_proj.weight", "not in its shard")


@pytest.mark.parametrize("header", [b"{not json", b"[1, 2]", b'{"w": {"dtype": "F32", "shape": [2, 2]}}',
                                    b'{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}'])
def test_corrupt_headers_fail_in_one_line(tmp_path, header):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    with pytest.raises(SourceError) as err:
        SafetensorsSource(path)
    _one_line_error(err, str(path))
    if header.startswith(b'{"w"'):
        _one_line_error(err, "'w'")


def test_dse_measure_on_a_truncated_file_exits_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"layer.weight": ("F32", np.ones((16, 32), np.float32))})
    truncate(path, path.stat().st_size - 4)
    assert main(["measure", "E2M3sUE4M4", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dse: error: ") and err.count("\n") == 1
    assert str(path) in err and "'layer.weight'" in err and "Traceback" not in err
