"""The CriticGPT chain end to end on the toy code task and a tiny model, on the session's Ray cluster: tamper ->
critic SFT on gold critiques -> critique RM on sampled + gold critiques ranked by their labels -> PPO of the critic
against it. Small budgets: this checks the stages connect and what each writes, not that the critic learns."""
import json

import pytest

from launch.critic import run_critic_ppo, run_critic_rm, run_critic_sft, run_critic_tamper
from launch.runlog import read_metrics
from rlhf.config import build_config, bundled_default
from rlhf.critic.critique import label_critique
from rlhf.critic.dataset import load_tampers

pytestmark = pytest.mark.slow


def critic_config(tmp_path, model_cache):
    tree = bundled_default("critic")
    tree["run"].update(output_dir=str(tmp_path), num_steps=2)
    tree["model"]["cache_dir"] = model_cache
    tree["critic"] = {"tamper": {"problems": "toy:24", "max_attempts": 2}, "rm": {"samples": 2}}
    tree["sft"].update(epochs=1, eval_every=100)
    tree["rm"].update(epochs=1, eval_every=100, batch_size=8, micro_batch_size=8)
    tree["rollout"].update(max_new_tokens=24, prompts_per_step=4)
    tree["deepspeed"] = {"policy": {"micro_batch_size": 4}, "value": {"micro_batch_size": 4}}
    tree["checkpoint"] = {"every": 0}
    tree["logging"] = {"wandb_mode": "disabled", "progress_bar": False}
    return build_config(tree, "test")


def test_critic_chain_tamper_sft_rm_ppo(ray_cluster, tmp_path, model_cache):
    cfg = critic_config(tmp_path, model_cache)
    root = tmp_path / "critic-default"
    tampers = load_tampers(run_critic_tamper(cfg))
    assert sum(len(tampers[s]) for s in ("train", "validation", "test")) == 24          # one per toy problem
    assert (run_critic_sft(cfg) / "config.json").exists()
    sft_rows = [json.loads(line) for line in (root / "data" / "sft.jsonl").read_text().splitlines()]
    assert len(sft_rows) == len(tampers["train"]) + len(tampers["validation"])
    assert sft_rows[0]["response"].startswith("```python\n") and sft_rows[0]["prompt"].endswith("Critique:\n")

    assert (run_critic_rm(cfg) / "config.json").exists()
    rankings = [json.loads(line) for line in (root / "data" / "rm.jsonl").read_text().splitlines()]
    by_prompt = {row["prompt"]: row for row in rankings}
    assert rankings and all(len(r["responses"]) == len(r["ranks"]) <= 3 for r in rankings)
    for tamper in tampers["train"]:
        row = by_prompt.get(f"Find the bug. Quote it in a ```python block, then explain.\n```python\n"
                            f"{tamper['tampered']}```\nCritique:\n")
        if row is None:
            continue
        gold = row["responses"][0]            # the gold critique catches the bug: nothing ranks above it
        assert label_critique(gold, tamper["tampered"], tamper["changed_lines"]).catches_bug
        assert row["ranks"][0] == 1

    policy = run_critic_ppo(cfg)
    assert (policy / "config.json").exists()
    assert [row["step"] for row in read_metrics(root / "ppo")] == [1, 2]
    # finished stages are not run again
    assert run_critic_sft(cfg) == root / "sft" / "best_hf"
    assert json.loads((root / "ppo" / "stage_done.json").read_text()) == {"stage": "ppo"}
