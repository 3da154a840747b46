"""sop-dse: models.

* :mod:`models.catalog`  exact linear shapes of open LLM families (``get_model``, ``list_models``);
* :mod:`models.roles`    one role vocabulary for HF, GGUF, BERT and CTranslate2 tensor names;
* :mod:`models.sources`  weight sources streamed one tensor at a time (``open_source``), with
  :mod:`models.gguf_source`, :mod:`models.ctranslate2` and :mod:`models.synthetic`;
* :mod:`models.activations` per-input-channel activation statistics (imatrix, vector files,
  MiniLM computed by :mod:`models.minilm`);
* :mod:`models.sampling` sampled error estimates with confidence intervals for very large models.
"""
