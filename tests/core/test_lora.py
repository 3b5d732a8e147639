"""LoRA in one process: only the adapters train, the merged weights by hand, the plain model's names, the base
function with the adapters off, the memory plan without reference actors, and LoRA settings refused early."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rlhf.config import ConfigError, ZeroSettings, load_config
from rlhf.lora import (LoraError, adapters_off, add_adapters, materialize, plain_model, weight_sources)
from rlhf.memory_plan import count_parameters, stage_plan, trainable_memory
from rlhf.models import make_tiny_model, load_causal_lm, tiny_config


def lora(rank=4, alpha=8.0, targets="all-linear"):
    return SimpleNamespace(rank=rank, alpha=alpha, dropout=0.0, target_modules=targets)


class TwoByTwo(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(2, 2, bias=False)
        self.proj.weight.data = torch.eye(2)

    def forward(self, x):
        return self.proj(x)


def test_merged_weight_by_hand():
    model = add_adapters(TwoByTwo(), lora(rank=1, alpha=2.0, targets=["proj"]))     # scaling alpha / r = 2
    params = dict(model.named_parameters())
    [source] = weight_sources(model)
    assert source.name == "proj.weight" and source.scaling == 2.0
    params[source.params[1]].data = torch.tensor([[1.0, 2.0]])      # A (r x in)
    params[source.params[2]].data = torch.tensor([[1.0], [0.0]])    # B (out x r)
    # W + 2 * B A = [[1, 0], [0, 1]] + 2 * [[1, 2], [0, 0]]
    merged = materialize(source, [params[p] for p in source.params])
    assert torch.equal(merged, torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    assert torch.equal(params[source.params[0]], torch.eye(2))       # the base is not touched
    x = torch.tensor([[1.0, 1.0]])
    assert torch.allclose(model(x), x @ merged.T)                    # the adapted layer computes the merged weight


def test_only_adapters_train_and_the_merge_is_peft_s(tmp_path):
    path = make_tiny_model(tmp_path / "m")
    base = load_causal_lm(str(path))
    initial = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    model = add_adapters(base, lora())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    # all-linear on the tiny Llama: q, k, v, o (64 -> 64), gate, up (64 -> 256), down (256 -> 64), r = 4, 2 layers
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * 4 * (4 * 128 + 3 * 320)
    ids = torch.randint(4, 90, (2, 7))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    params = dict(model.named_parameters())
    merged = {s.name: materialize(s, [params[p] for p in s.params]) for s in weight_sources(model)}
    assert set(merged) | {"lm_head.weight"} >= set(initial) - {"lm_head.weight"}
    adapted = {s.name for s in weight_sources(model) if s.scaling is not None}
    assert len(adapted) == 14
    for name, tensor in merged.items():
        assert torch.equal(tensor, initial[name]) != (name in adapted), name    # only adapted layers changed
    reference = plain_model(model)
    import copy

    peft_merged = copy.deepcopy(model).merge_and_unload().state_dict()
    for name, tensor in merged.items():
        assert torch.allclose(tensor, peft_merged[name], atol=1e-6), name
    with torch.no_grad(), adapters_off(model):
        off = model(input_ids=ids).logits
    fresh = load_causal_lm(str(path))
    assert torch.equal(off, fresh(input_ids=ids).logits.detach())               # adapters off: the initial model
    assert not torch.allclose(model(input_ids=ids).logits, off)
    assert reference is model.get_base_model()


def test_settings_a_model_cannot_take_are_refused():
    from transformers import AutoModelForCausalLM

    def tied():
        config = tiny_config()
        config.tie_word_embeddings = True
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)

    with pytest.raises(LoraError, match=r"^model.lora.target_modules: Target modules \{'nope'\} not found"):
        add_adapters(tied(), lora(targets=["nope"]))
    with pytest.raises(LoraError, match=r"model.embed_tokens is a Embedding; adapters go on linear layers only"):
        add_adapters(tied(), lora(targets=["embed_tokens"]))
    with pytest.raises(LoraError, match=r"lm_head shares its weight with another layer \(tied embeddings\)"):
        add_adapters(tied(), lora(targets=["q_proj", "lm_head"]))


def test_memory_plan_counts_adapters_and_no_reference_actors(tmp_path):
    # LoRA: every weight is held, only the adapters have gradients and Adam state (fp32, ZeRO-0: 4 + 8 bytes)
    assert trainable_memory("p", 1000, 4, 1, ZeroSettings(zero_stage=0), trainable=10).device == {
        "weights": 4000, "gradients": 40, "optimizer": 80}
    cfg = load_config(None, ["--model.cache_dir", str(tmp_path), "--model.lora.rank", "4", "--model.lora.value",
                             "true"], stage="ppo")
    total, trainable = count_parameters("tiny", False, cfg.model.tiny, "model.policy", cfg.model.lora)
    assert trainable == 2 * 4 * (4 * 128 + 3 * 320) and total == count_parameters("tiny", False)[0] + trainable
    roles = {r.role: r for r in stage_plan(cfg, "ppo")}
    assert set(roles) == {"policy", "rollout", "value"}        # the policy actors score the reference
    assert roles["policy"].device["gradients"] == trainable * 4
    # the value model: adapters plus its scalar head (64 + 1) train
    _, value_trainable = count_parameters("tiny", True, cfg.model.tiny, "model.value", cfg.model.lora)
    assert roles["value"].device["gradients"] == value_trainable * 4 == (trainable + 65) * 4
    assert cfg.active_roles() == ["policy", "value", "reward", "rollout"]


def test_lora_config_is_checked_before_anything_starts(tmp_path):
    base = ["--model.cache_dir", str(tmp_path), "--model.lora.rank", "4"]
    with pytest.raises(ConfigError, match=r"model.lora.reference_from_policy: the policy with its adapters off is "
                                          r"model.policy \('tiny'\), not model.reference \('other'\)"):
        load_config(None, base + ["--model.reference", "other"], stage="ppo")
    separate = load_config(None, base + ["--model.reference", "other", "--model.lora.reference_from_policy",
                                         "false"], stage="ppo")
    assert "reference" in separate.active_roles()
    with pytest.raises(ConfigError, match=r"model.lora.target_modules"):
        load_config(None, base + ["--model.lora.target_modules", "[]"], stage="ppo")
    with pytest.raises(LoraError, match=r"model.lora.target_modules: Target modules \{'nope'\}"):
        stage_plan(load_config(None, base + ["--model.lora.target_modules", "[nope]"], stage="ppo"), "ppo")
