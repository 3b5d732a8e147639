"""LoRA PPO end to end: the reward rises on the toy task with only adapters training (the exported merged model
differs from the base only in the adapted layers, and equals base + adapter through PEFT), the reference comes from
the policy actors with the adapters off (no reference actors), and the same run on 2 ZeRO-3 ranks, stopped and
resumed from an adapters-only checkpoint, gives the same metrics as 1 ZeRO-0 rank (LoRA under ZeRO-1 and 2 is the
same code path as full fine-tuning there: an optimizer over the trainable parameters only)."""
import pytest
import torch

from launch.ppo import run_ppo
from launch.runlog import read_metrics
from tests.conftest import small_config
from tests.e2e.test_equivalence import COMPARED

pytestmark = pytest.mark.slow

# every linear layer and the (untied) output head: the tiny random model's layers alone learn the toy task slowly
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]


def lora_config(tmp_path, model_cache, name, steps, actors=1, stage=0, **sections):
    """The policy on `actors` ranks of ZeRO `stage`; the value model (with adapters too) on one ZeRO-0 rank, whose
    layout changes no number either (tests/e2e/test_equivalence.py)."""
    return small_config(tmp_path, model_cache, name, run__num_steps=steps,
                        rollout={"prompts_per_step": 16, "n_samples_per_prompt": 4, "max_new_tokens": 8},
                        model__lora={"rank": 16, "alpha": 16.0, "target_modules": TARGETS, "value": True},
                        ppo__num_minibatches=4, ppo__policy_lr=3e-3, actors__policy__num_actors=actors,
                        deepspeed={"policy": {"micro_batch_size": 16 // actors, "zero_stage": stage},
                                   "value": {"micro_batch_size": 16}}, **sections)


@pytest.fixture(scope="module")
def learned(tmp_path_factory, model_cache, ray_cluster):
    folder = tmp_path_factory.mktemp("lora")
    return read_metrics(run_ppo(lora_config(folder, model_cache, "learn", 20))), folder / "learn"


def test_lora_reward_rises_and_only_adapters_change_the_model(learned):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rows, run_dir = learned
    rewards = [row["reward/score_mean"] for row in rows]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.1 and last > 2 * first, (first, last)
    # the reference is the policy with its adapters off: identical to it before the first update (B = 0)
    assert rows[0]["kl/sequence_mean"] == 0.0 and rows[-1]["kl/sequence_mean"] > 0.1
    # the rollout actors sample from the merged weights: the same function as the policy with its adapters
    assert max(row["rollout/logprob_gap"] for row in rows) < 1e-4

    merged = AutoModelForCausalLM.from_pretrained(run_dir / "policy_hf")
    adapter_dir = run_dir / "policy_adapter"
    base_path = __import__("json").loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path).state_dict()
    adapted = {f"{name}.weight" for name, _ in merged.named_modules() if name.split(".")[-1] in TARGETS}
    assert len(adapted) == 2 * 7 + 1
    for name, tensor in merged.state_dict().items():
        assert torch.equal(tensor, base[name]) != (name in adapted), name
    rebuilt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), adapter_dir)
    ids = torch.randint(4, 90, (2, 9))
    with torch.no_grad():
        assert torch.allclose(rebuilt(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5)


def test_lora_on_zero3_ranks_resumed_matches_one_zero0_rank(learned, tmp_path, model_cache):
    rows, _ = learned
    split = dict(checkpoint={"save_at_end": True, "export_hf": False})
    run_ppo(lora_config(tmp_path, model_cache, "split", 2, actors=2, stage=3, **split))
    checkpoint = next((tmp_path / "split" / "checkpoints").glob("step_*/policy/state"))
    module = torch.load(next(checkpoint.glob("*model_states.pt")), weights_only=False)["module"]
    resumed = read_metrics(run_ppo(lora_config(tmp_path, model_cache, "split", 4, actors=2, stage=3, **split),
                                   resume=True))
    assert [row["step"] for row in resumed] == [1, 2, 3, 4]
    for expected, got in zip(rows[:4], resumed):
        for key in COMPARED:
            assert got[key] == pytest.approx(expected[key], rel=2e-4, abs=2e-5), (expected["step"], key)
    # the checkpoint holds the adapters (and their optimizer state), not the frozen base
    assert module and all(".lora_A." in name or ".lora_B." in name for name in module), list(module)[:3]
