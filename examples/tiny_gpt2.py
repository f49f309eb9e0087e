"""Save a small randomly initialised GPT-2 (4 layers, 128 wide) with MiniLM's tokenizer to
examples/tiny-gpt2, so the causal-LM pipeline can be tried without downloading a model.

    python examples/tiny_gpt2.py [DIR]
"""

import sys
from pathlib import Path

from transformers import GPT2Config, GPT2LMHeadModel, set_seed

from tunescope.finetune.builtin import model_dir
from tunescope.finetune.models import load_tokenizer

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "tiny-gpt2")
tok = load_tokenizer(str(model_dir("builtin:minilm")))
tok.eos_token = tok.sep_token  # BERT's [SEP] ends each document
set_seed(0)
config = GPT2Config(
    vocab_size=len(tok),
    n_embd=128,
    n_layer=4,
    n_head=4,
    n_positions=256,
    bos_token_id=tok.eos_token_id,
    eos_token_id=tok.eos_token_id,
    pad_token_id=tok.pad_token_id,
)
GPT2LMHeadModel(config).save_pretrained(out)
tok.save_pretrained(out)
print(f"saved to {out}")
