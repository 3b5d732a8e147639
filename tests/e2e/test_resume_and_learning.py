"""End-to-end PPO runs: the reward rises on the toy task; a stopped and resumed run matches an uninterrupted one;
the exported policy loads in transformers; critic-free estimators and PPO-ptx run."""
import json

import pytest

from launch.ppo import run_ppo
from launch.runlog import read_metrics
from tests.conftest import small_config

pytestmark = pytest.mark.slow

TIMING_PREFIXES = ("time/", "throughput/")


def comparable(rows):
    return [{k: v for k, v in row.items() if not k.startswith(TIMING_PREFIXES)} for row in rows]


def test_reward_rises_and_policy_exports(tmp_path, model_cache, ray_cluster):
    cfg = small_config(tmp_path, model_cache, "learn", run__num_steps=60,
                       rollout={"prompts_per_step": 16, "n_samples_per_prompt": 4, "max_new_tokens": 8},
                       deepspeed={"policy": {"micro_batch_size": 16}, "value": {"micro_batch_size": 16}},
                       ppo__num_minibatches=4)
    run_dir = run_ppo(cfg)
    rewards = [row["reward/score_mean"] for row in read_metrics(run_dir)]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.1 and last > 2 * first, (first, last)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run_dir / "policy_hf")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "policy_hf")
    ids = tokenizer("repeat 3:", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]
    assert (run_dir / "config.yaml").exists() and (run_dir / "samples.jsonl").exists()


def test_resume_matches_uninterrupted_run(tmp_path, model_cache, ray_cluster):
    layout = dict(actors__policy__num_actors=2, deepspeed__policy__zero_stage=2, checkpoint__export_hf=False,
                  reward__normalization="running", ppo__adaptive_kl=True, ppo__kl_target=0.5, ppo__kl_horizon=100)
    full = read_metrics(run_ppo(small_config(tmp_path / "a", model_cache, "full", run__num_steps=4, **layout)))
    run_ppo(small_config(tmp_path / "b", model_cache, "split", run__num_steps=2, **layout))
    resumed_dir = run_ppo(small_config(tmp_path / "b", model_cache, "split", run__num_steps=4, **layout), resume=True)
    resumed = read_metrics(resumed_dir)
    assert [row["step"] for row in resumed] == [1, 2, 3, 4]
    for expected, got in zip(comparable(full), comparable(resumed)):
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-6), expected["step"]
    assert sorted(p.name for p in (resumed_dir / "checkpoints").iterdir()) == ["latest", "step_000002", "step_000004"]


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce++"])
def test_critic_free_estimators_run_without_value_actors(tmp_path, model_cache, ray_cluster, estimator):
    cfg = small_config(tmp_path, model_cache, estimator, run__num_steps=2, checkpoint__export_hf=False,
                       ppo__advantage_estimator=estimator, ppo__kl_mode="loss", ppo__kl_estimator="k3")
    rows = read_metrics(run_ppo(cfg))
    assert len(rows) == 2 and not any(key.startswith("value/") for key in rows[-1])
    assert "policy/kl_loss" in rows[-1]


def test_ptx_loss_is_mixed_in(tmp_path, model_cache, ray_cluster):
    texts = tmp_path / "pretrain.jsonl"
    texts.write_text("".join(json.dumps({"text": f"the number {i} is written {i}{i}{i}."}) + "\n" for i in range(40)))
    cfg = small_config(tmp_path, model_cache, "ptx", run__num_steps=2, checkpoint__export_hf=False,
                       data__ptx=str(texts), data__ptx_batch_size=4, ppo__ptx_coef=0.5,
                       actors__policy__num_actors=2)
    rows = read_metrics(run_ppo(cfg))
    assert all(row["policy/ptx_loss"] > 1.0 for row in rows)   # ~ln(92) for an untrained model
    assert rows[0]["policy/loss"] == pytest.approx(rows[0]["policy/pg_loss"] + 0.5 * rows[0]["policy/ptx_loss"],
                                                   rel=1e-4, abs=1e-6)
