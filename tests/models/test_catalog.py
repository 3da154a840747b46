"""Shape catalog: exact totals from each model's config.json, advertised sizes, traps."""

import pytest

from models.catalog import UnknownModelError, get_model, list_models
from models.roles import ROLES, role_of
from quant.errors import DseError, UnknownFormatError

# (id, decoder linears, total), computed by hand from each model's config.json
DOC_TOTALS = {
    "llama-3.1-8b": (6_979_321_856, 8_030_261_248),
    "llama-3.1-70b": (68_451_041_280, 70_553_706_496),
    "llama-3.1-405b": (None, 405_853_388_800),
    "llama-3.2-1b": (973_078_528, 1_235_814_400),
    "llama-3.2-3b": (2_818_572_288, 3_212_749_824),
    "mistral-7b-v0.3": (6_979_321_856, 7_248_023_552),
    "qwen2.5-0.5b": (None, 494_032_768),
    "qwen2.5-3b": (None, 3_085_938_688),
    "qwen2.5-7b": (6_525_288_448, 7_615_616_512),
    "qwen3-8b": (6_945_767_424, 8_190_735_360),
    "qwen3-4b": (3_633_315_840, 4_022_468_096),
    "gemma-3-1b": (697_761_792, 999_885_952),
    "smollm2-135m": (106_168_320, 134_515_008),
    "smollm2-360m": (None, 361_821_120),
    "smollm2-1.7b": (1_610_612_736, 1_711_376_384),
    "smollm3-3b": (2_812_280_832, 3_075_098_624),
    "phi-3-mini-4k": (3_623_878_656, 3_821_079_552),
    "olmo-2-7b": (6_476_005_376, 7_298_617_344),
    "mixtral-8x7b": (46_440_382_464, 46_702_792_704),
    "deepseek-v3": (669_172_039_680, 671_026_419_200),
}
ISSUE_MODELS = ("llama-3.1-8b", "llama-3.1-70b", "llama-3.2-1b", "llama-3.2-3b", "mistral-7b-v0.3", "qwen2.5-7b",
                "qwen3-8b", "qwen3-4b", "gemma-3-1b", "smollm2-135m", "smollm3-3b", "phi-3-mini-4k", "olmo-2-7b",
                "mixtral-8x7b", "deepseek-v3")


def test_catalog_holds_the_issue_models_and_nothing_undocumented():
    assert set(ISSUE_MODELS) <= set(list_models())
    assert set(list_models()) == set(DOC_TOTALS)
    assert len({get_model(m).family for m in list_models()}) >= 6


@pytest.mark.parametrize("model_id", list(DOC_TOTALS))
def test_params_within_one_percent_of_advertised(model_id):
    m = get_model(model_id)
    assert abs(m.params / m.advertised_params - 1) < 0.01, (m.params, m.advertised_params)


@pytest.mark.parametrize("model_id", list(DOC_TOTALS))
def test_totals_match_the_shapes_doc_exactly(model_id):
    decoder, total = DOC_TOTALS[model_id]
    m = get_model(model_id)
    assert m.params == total
    if decoder is not None:
        assert m.decoder_linear_params == decoder
    assert m.linear_params == sum(t.out_features * t.in_features * t.count for t in m.tensors)


@pytest.mark.parametrize("model_id", list(DOC_TOTALS))
def test_every_tensor_name_maps_to_its_role(model_id):
    for t in get_model(model_id).tensors:
        assert t.role in ROLES
        assert role_of(t.name) == t.role, t.name
        assert all(role_of(n) == t.role for n in t.instance_names()[:2])


def test_q_width_differs_from_hidden_where_the_config_says_so():
    # head_dim from config.json, not hidden / heads: Qwen3-4B q (4096, 2560), o (2560, 4096); Gemma-3-1B q (1024, 1152)
    qwen = {t.role: t.shape for t in get_model("qwen3-4b").tensors if t.layer == 0}
    assert qwen["q"] == (4096, 2560) and qwen["o"] == (2560, 4096) and qwen["k"] == (1024, 2560)
    gemma = {t.role: t.shape for t in get_model("gemma-3-1b").tensors if t.layer == 25}
    assert gemma["q"] == (1024, 1152) and gemma["o"] == (1152, 1024) and gemma["v"] == (256, 1152)


def test_phi3_keeps_fused_tensors():
    roles = {t.role: t.shape for t in get_model("phi-3-mini-4k").tensors if t.layer == 0}
    assert roles == {"qkv": (9216, 3072), "o": (3072, 3072), "gate_up": (16384, 3072), "down": (3072, 8192)}


def test_tied_embeddings_have_no_lm_head():
    for model_id in list_models():
        m = get_model(model_id)
        heads = [t for t in m.tensors if t.role == "lm_head"]
        assert len(heads) == (0 if m.tied_embeddings else 1), model_id
    assert get_model("llama-3.2-1b").tied_embeddings and not get_model("llama-3.1-8b").tied_embeddings


def test_moe_experts_are_counted_not_expanded():
    mixtral = get_model("mixtral-8x7b")
    experts = [t for t in mixtral.tensors if t.role.startswith("expert_")]
    assert len(experts) == 3 * 32 and {t.count for t in experts} == {8}
    assert experts[0].instance_names()[7] == "model.layers.0.block_sparse_moe.experts.7.w1.weight"
    assert mixtral.active_params == 12_879_925_248  # Mistral AI: "12.9B active"
    assert get_model("deepseek-v3").active_params == 37_552_297_472  # §18


def test_deepseek_mla_shapes():
    layer = {t.role: t.shape for t in get_model("deepseek-v3").tensors if t.layer == 3}
    assert layer["q_a"] == (1536, 7168) and layer["q_b"] == (24576, 1536)
    assert layer["kv_a"] == (576, 7168) and layer["kv_b"] == (32768, 512) and layer["o"] == (7168, 16384)
    assert layer["router"] == (256, 7168) and layer["expert_down"] == (7168, 2048)
    dense = {t.role for t in get_model("deepseek-v3").tensors if t.layer == 2}
    assert "router" not in dense and "gate" in dense


def test_lookup_is_case_insensitive_and_unknown_ids_suggest():
    assert get_model("  Llama-3.1-8B ").id == "llama-3.1-8b"
    with pytest.raises(UnknownModelError) as err:
        get_model("qwen3-7b")
    message = str(err.value)
    assert "did you mean" in message and "qwen3-8b" in message and "\n" not in message
    assert isinstance(err.value, UnknownFormatError) and isinstance(err.value, DseError)
