"""Role actors on a real local Ray cluster: groups, placement and colocation, ZeRO-3 frozen engines, weight sync
from a ZeRO-3 policy to rollout actors, and a scalar-head reward model."""
import pytest
import ray
import torch

from actors.group import ActorGroup
from actors.placement import PlacementError, create_placement_groups, remove_groups
from actors.policy import PolicyWorker
from actors.reference import ReferenceWorker
from actors.reward import RewardWorker
from actors.rollout import RolloutWorker
from actors.weight_sync import sync_policy_to_rollout
from rlhf.config import RoleResources
from rlhf.data.prompts import left_pad
from rlhf.generation import HFGenerateEngine, SamplingParams
from rlhf.models import (load_causal_lm, load_scalar_model, load_tokenizer, make_tiny_model,
                         save_reward_normalization)
from tests.conftest import small_config


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return str(make_tiny_model(root / "a", seed=1)), str(make_tiny_model(root / "b", seed=2))


def group(worker_cls, role, cfg, actors, distributed):
    resources = RoleResources(num_actors=actors, num_cpus=1)
    placement = create_placement_groups(cfg.actors.model_copy(update={role: resources}), [role])[role]
    return ActorGroup(worker_cls, role, resources, placement, cfg.model_dump(mode="json"), distributed), placement


def prompts(tokenizer, count=4):
    rows = tokenizer([f"repeat {i}:" for i in range(count)], add_special_tokens=False)["input_ids"]
    return left_pad(rows, tokenizer.pad_token_id)


def experience(tokenizer, path, n=2):
    ids, mask = prompts(tokenizer)
    engine = HFGenerateEngine(load_causal_lm(path), tokenizer, torch.device("cpu"))
    return engine.generate(ids, mask, torch.arange(4), SamplingParams(max_new_tokens=5, n_samples_per_prompt=n), 3)


def test_group_calls_in_rank_order_restarts_and_rejects_impossible_placement(ray_cluster, tmp_path, model_cache):
    cfg = small_config(tmp_path, model_cache)
    workers, placement = group(RolloutWorker, "rollout", cfg, 2, distributed=False)
    assert [r for r in ray.get([a.__ray_call__.remote(lambda self: self.rank) for a in workers.actors])] == [0, 1]
    workers.restart()
    assert workers.run("ready") == [True, True]
    workers.shutdown()
    remove_groups({"rollout": placement})
    huge = cfg.actors.model_copy(update={"policy": RoleResources(num_actors=1, num_cpus=1000)})
    with pytest.raises(PlacementError, match=r"roles policy need 1 bundle\(s\) of \{'CPU': 1000"):
        create_placement_groups(huge, ["policy"], timeout_s=2)


def test_colocated_roles_share_bundles(ray_cluster, tmp_path, model_cache):
    cfg = small_config(tmp_path, model_cache, actors={"policy": {"num_cpus": 1}, "reference": {"num_cpus": 0.5,
                                                                                                 "colocate_with": "policy"}})
    groups = create_placement_groups(cfg.actors, ["policy", "reference", "reward"])
    try:
        assert groups["policy"] is groups["reference"] and groups["reward"] is not groups["policy"]
        assert groups["policy"].bundle_specs == [{"CPU": 1.5}]
    finally:
        remove_groups(groups)


def test_zero3_reference_matches_plain_replica(ray_cluster, tmp_path, model_cache, models):
    path = models[0]
    tokenizer = load_tokenizer(path)
    exp = experience(tokenizer, path)
    results = []
    for stage, actors in ((0, 1), (3, 2)):
        cfg = small_config(tmp_path, model_cache, deepspeed__frozen_zero_stage=stage)
        workers, placement = group(ReferenceWorker, "reference", cfg, actors, distributed=stage == 3)
        workers.run("setup", path)
        results.append(torch.cat(workers.run("logprobs", exp)))
        workers.shutdown()
        remove_groups({"reference": placement})
    assert results[0].shape == exp.response_mask.shape
    assert torch.allclose(results[0], results[1], atol=1e-5)


def test_weight_sync_from_zero3_policy_reaches_rollout(ray_cluster, tmp_path, model_cache, models):
    policy_path, other_path = models
    cfg = small_config(tmp_path, model_cache, deepspeed__policy__zero_stage=3, actors__policy__num_actors=2)
    policy, p_placement = group(PolicyWorker, "policy", cfg, 2, distributed=True)
    rollout, r_placement = group(RolloutWorker, "rollout", cfg, 1, distributed=False)
    try:
        policy.run("setup", policy_path)
        rollout.run("setup", other_path, other_path)    # starts from different weights
        tokenizer = load_tokenizer(policy_path)
        ids, mask = prompts(tokenizer)
        params = SamplingParams(max_new_tokens=6, n_samples_per_prompt=1)
        before = ray.get(rollout.call("generate", ids, mask, torch.arange(4), params, 5))[0]
        seconds = sync_policy_to_rollout(policy, rollout)
        after = ray.get(rollout.call("generate", ids, mask, torch.arange(4), params, 5))[0]
        local = HFGenerateEngine(load_causal_lm(policy_path), tokenizer, torch.device("cpu"))
        expected = local.generate(ids, mask, torch.arange(4), params, 5 * 131)
        assert seconds > 0
        assert torch.equal(after.sequences, expected.sequences)
        assert not torch.equal(before.sequences, expected.sequences)
    finally:
        for g, p in ((policy, p_placement), (rollout, r_placement)):
            g.shutdown()
            remove_groups({"x": p})


def test_scalar_head_reward_model_scores_last_token(ray_cluster, tmp_path, model_cache, models):
    path = models[0]
    reward_dir = tmp_path / "rm"
    rm = load_scalar_model(path)
    rm.save_pretrained(reward_dir)
    load_tokenizer(path).save_pretrained(reward_dir)
    cfg = small_config(tmp_path, model_cache, reward={"function": None, "model": str(reward_dir)})
    workers, placement = group(RewardWorker, "reward", cfg, 2, distributed=False)
    try:
        workers.run("setup", path)
        tokenizer = load_tokenizer(path)
        exp = experience(tokenizer, path)
        scores = torch.cat(workers.run("scores", exp))
        row = 1
        real = exp.attention_mask[row].bool()
        expected = rm(input_ids=exp.sequences[row][real].unsqueeze(0)).logits[0, -1, 0]
        assert scores.shape == (8,) and scores[row].item() == pytest.approx(expected.item(), abs=1e-5)
    finally:
        workers.shutdown()
        remove_groups({"reward": placement})
    # bias normalization saved with the model is applied wherever it scores
    save_reward_normalization(reward_dir, shift=2.0, scale=4.0, reference="test")
    workers, placement = group(RewardWorker, "reward", cfg, 1, distributed=False)
    try:
        workers.run("setup", path)
        normalized = torch.cat(workers.run("scores", exp))
        assert torch.allclose(normalized, (scores - 2.0) / 4.0, atol=1e-5)
    finally:
        workers.shutdown()
        remove_groups({"reward": placement})
