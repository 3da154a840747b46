"""The numpy MiniLM encoder behaves like the real model, and yields activation statistics."""

import numpy as np
import pytest

from models.activations import load_activations
from models.minilm import sentence_embeddings
from models.texts import CALIBRATION
from models.sources import open_source
from quant import measure, parse_candidate

pytest.importorskip("tokenizers")

TRIPLETS = [  # (anchor, paraphrase, unrelated)
    ("A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today."),
    ("A woman is slicing an onion.", "A person cuts an onion with a knife.", "The train left the station late."),
    ("The cat sleeps on the sofa.", "A kitten is napping on the couch.", "Parliament passed the new tax law."),
    ("How do I reset my password?", "I forgot my password, how can I change it?", "Penguins live in Antarctica."),
]


def test_paraphrases_embed_closer_than_unrelated_sentences():
    e = sentence_embeddings([s for t in TRIPLETS for s in t]).reshape(len(TRIPLETS), 3, -1)
    assert np.allclose(np.linalg.norm(e, axis=-1), 1.0, atol=1e-5)
    paraphrase = np.einsum("td,td->t", e[:, 0], e[:, 1])
    unrelated = np.einsum("td,td->t", e[:, 0], e[:, 2])
    assert np.all(paraphrase > 0.5) and np.all(unrelated < 0.2) and np.all(paraphrase > unrelated + 0.4)


def test_padding_does_not_change_an_embedding():
    alone = sentence_embeddings([TRIPLETS[0][0]])
    batched = sentence_embeddings([TRIPLETS[0][0], CALIBRATION[4]])[:1]
    np.testing.assert_allclose(alone, batched, atol=1e-6)


def test_activation_statistics_cover_every_linear_layer():
    stats = load_activations("minilm")
    source = open_source("minilm")
    mapped = stats.map_to(source.infos())
    linears = [i for i in source.infos() if not i.name.startswith("embeddings.")]
    assert set(mapped) == {i.name for i in linears} and len(mapped) == 37
    for info in linears:
        h = mapped[info.name]
        assert h.shape == (info.shape[1],) and np.all(h >= 0) and np.all(np.isfinite(h)) and h.max() > 0
    q, k = mapped["encoder.layer.3.attention.self.query.weight"], mapped["encoder.layer.3.attention.self.key.weight"]
    np.testing.assert_array_equal(q, k)  # one input feeds q, k and v
    # activation-weighted error of a real tensor: defined and different from the plain one
    w = source.load("encoder.layer.0.output.dense.weight")
    s = measure(w, parse_candidate("E2M1sUE8M0@32"), act=mapped["encoder.layer.0.output.dense.weight"])
    assert s.weighted and np.isfinite(s.act_rel_mse) and abs(s.act_rel_mse / s.rel_mse - 1) > 0.01
