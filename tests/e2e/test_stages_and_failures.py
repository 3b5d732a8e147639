"""Stages as a user chains them, and failures that must not leak: `sft`, then `rm`, then `ppo` in one folder with
their own default run names and settings; reward-model validation on fewer held-out prompts than its batch size;
a worker that fails during start-up or during a step surfaces with its role and rank, and every actor and placement
group the run created is gone afterwards, although the (test session's) Ray cluster lives on."""
import time

import pytest
import ray
from ray.util import placement_group_table

from launch.ppo import run_ppo
from launch.rm import run_rm
from launch.runlog import read_metrics
from launch.sft import run_sft
from rlhf.config import build_config, bundled_default
from tests.conftest import small_config

pytestmark = pytest.mark.slow


def assert_nothing_left(timeout_s: float = 30.0) -> None:
    """Every CPU of the cluster is free again and no placement group is left alive."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [g for g in placement_group_table().values() if g["state"] not in ("REMOVED",)]
        free = ray.available_resources().get("CPU", 0.0) == ray.cluster_resources().get("CPU")
        if free and not alive:
            return
        assert time.monotonic() < deadline, (ray.available_resources(), alive)
        time.sleep(0.2)


def test_sft_then_rm_then_ppo_in_one_folder(tmp_path, model_cache, ray_cluster):
    tree = bundled_default("pipeline")
    tree["run"] = {"output_dir": str(tmp_path), "num_steps": 1}
    tree["model"]["cache_dir"] = model_cache
    tree["logging"] = {"wandb_mode": "disabled", "progress_bar": False}
    tree["checkpoint"] = {"save_at_end": False}
    # SFT and RM on their own settings; a PPO-only impossibility (3 minibatches of 64) is not their business
    sft_tree = {**tree, "ppo": {"num_minibatches": 3},
                "sft": {**tree["sft"], "epochs": 0.05, "eval_every": 100, "micro_batch_size": 8,
                        "deepspeed": {"zero_stage": 2}}}
    sft_dir = run_sft(build_config(sft_tree))
    # 1500 comparisons, 1 % held out = 15 prompts: fewer than rm.batch_size 16, all of them validated
    rm_tree = {**tree, "rm": {**tree["rm"], "epochs": 0.05, "eval_every": 100, "validation_fraction": 0.01,
                              "base": str(sft_dir / "final_hf")}}
    rm_dir = run_rm(build_config(rm_tree))
    ppo_tree = {**tree, "model": {**tree["model"], "policy": str(sft_dir / "final_hf")},
                "reward": {"function": None, "model": str(rm_dir / "final_hf")}}
    ppo_dir = run_ppo(build_config(ppo_tree))
    assert [d.name for d in (sft_dir, rm_dir, ppo_dir)] == ["sft-default", "rm-default", "ppo-default"]
    assert all(d.parent == tmp_path for d in (sft_dir, rm_dir, ppo_dir))
    rm_rows = read_metrics(rm_dir)
    assert 0.0 <= rm_rows[-1]["rm/val_accuracy"] <= 1.0 and "rm/val_loss" in rm_rows[-1]
    assert (rm_dir / "final_hf" / "reward_normalization.json").exists()
    assert len(read_metrics(ppo_dir)) == 1
    assert_nothing_left()


def test_worker_failing_at_start_up_names_role_and_rank_and_leaves_nothing(tmp_path, model_cache, ray_cluster):
    broken = tmp_path / "broken_value"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no_such_architecture"}')
    cfg = small_config(tmp_path, model_cache, "broken", model__value=str(broken), actors__value__num_actors=2)
    with pytest.raises(Exception, match=r"value actor [01] \(setup\): cannot load scalar-head model"):
        run_ppo(cfg)
    assert not (tmp_path / "broken").exists()
    assert_nothing_left()


def test_worker_failing_mid_run_names_role_and_rank_and_leaves_nothing(tmp_path, model_cache, ray_cluster):
    cfg = small_config(tmp_path, model_cache, "flaky", reward__function="tests.e2e.flaky_rewards:fails_at_second_call")
    with pytest.raises(Exception, match=r"reward actor 0 \(scores\): .*raised ZeroDivisionError: the judge crashed"):
        run_ppo(cfg)
    assert [row["step"] for row in read_metrics(tmp_path / "flaky")] == [1]
    assert_nothing_left()
