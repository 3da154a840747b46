"""Make the decoder oracle: reference log-probabilities of SmolLM2-135M from HF transformers.

Run once, in a throwaway venv that is NOT the project's (torch is not a dependency of sop-dse):

    python3 -m venv /tmp/oracle && /tmp/oracle/bin/pip install torch==2.13.0 transformers accelerate gguf numpy
    /tmp/oracle/bin/python tests/models/data/make_llama_oracle.py SmolLM2-135M-Instruct.Q4_1.gguf

transformers dequantizes the GGUF (Q4_1 linears, Q8_0 embedding) to float32, undoes llama.cpp's
q/k row permutation and runs its own LlamaForCausalLM: an implementation this project did not
write. It also tokenizes the prompt with its own GGUF tokenizer conversion. The output keeps,
per position, the TOP_K most likely next tokens with their log-probabilities, so the file stays
small; the test lumps the remaining tokens into one bucket (a coarsened KL, which by the
data-processing inequality never exceeds the full one, and is close to it when the top tokens
carry most of the mass).
"""

import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = ("The old lighthouse now houses a small museum about shipwrecks, and every summer "
          "volunteers guide visitors up the narrow stairs to see the lamp that once warned ships away from the rocks.")
TOP_K = 512

gguf = Path(sys.argv[1])
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
model.eval()
ids = tok(PROMPT, add_special_tokens=False, return_tensors="pt").input_ids
with torch.no_grad():
    logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
top = torch.topk(logp, TOP_K, dim=-1)
out = Path(__file__).with_name("smollm2_oracle.npz")
np.savez_compressed(out, prompt=np.array(PROMPT), ids=ids[0].numpy().astype(np.int32),
                    top_ids=top.indices.numpy().astype(np.int32), top_logp=top.values.numpy().astype(np.float32),
                    versions=np.array(f"torch {torch.__version__}, transformers {transformers.__version__}"))
print(f"wrote {out}: {ids.shape[1]} tokens, mass outside top-{TOP_K}: "
      f"max {float(1 - top.values.exp().sum(-1).min()):.2e}")
