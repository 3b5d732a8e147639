"""Numerical faults on real DeepSpeed ranks: an update whose loss is not finite on ONE rank is skipped on every
rank, leaving the model, the optimizer and the LR schedule exactly as if it never happened."""
import pytest
import ray
import torch

from actors.group import RoleGroups, RoleSpec
from actors.policy import PolicyWorker
from actors.trainable import reduce_train_stats
from rlhf.config import RoleResources
from rlhf.models import load_tokenizer, make_tiny_model
from tests.actors.test_roles import experience
from tests.conftest import small_config


def weights_of_every_rank(policy, stage: int) -> list[dict]:
    if stage == 3:                                 # partitioned: the gathered whole, on rank 0
        return [policy.run("full_state_dict")[0]]
    return ray.get([actor.__ray_call__.remote(
        lambda self: {k: v.detach().clone() for k, v in self.engine.module.state_dict().items()})
        for actor in policy.actors])


# ZeRO-0: our guard alone decides; ZeRO-3: DeepSpeed also skips on the non-finite global norm, and calls the
# optimizer once per parameter sub-group (ZeRO-1/2 take the same path as 0 through the guard, or DeepSpeed's check)
@pytest.mark.parametrize("stage", [pytest.param(0, marks=pytest.mark.slow), 3])
def test_a_nan_on_one_rank_skips_the_update_on_all(ray_cluster, tmp_path, model_cache, stage):
    path = str(make_tiny_model(tmp_path / "model", seed=3))
    # warmup: the LR changes with every applied update, so a schedule that advanced on the skip would show
    cfg = small_config(tmp_path, model_cache, deepspeed__policy__zero_stage=stage, actors__policy__num_actors=2,
                       ppo__warmup_steps=4, ppo__policy_lr=1e-3)
    exp = experience(load_tokenizer(path), path)             # 8 rows: one minibatch = 4 rows on each of 2 ranks
    zeros = torch.zeros_like(exp.response_mask)
    advantages = torch.randn(zeros.shape, generator=torch.Generator().manual_seed(0))
    poisoned = advantages.clone()
    poisoned[6, 0] = float("nan")                            # row 6: in rank 1's half of the minibatch only
    rows = torch.arange(len(exp))
    clean = exp.replace(old_logprobs=zeros, reference_logprobs=zeros, advantages=advantages)
    bad = clean.replace(advantages=poisoned)

    spec = [RoleSpec("policy", PolicyWorker, (path,), True, RoleResources(num_actors=2))]
    with RoleGroups(cfg, spec) as groups:
        policy = groups["policy"]
        policy.run("save_checkpoint", str(tmp_path / "initial"))     # both runs start from the same state

        def run(updates):
            policy.run("load_checkpoint", str(tmp_path / "initial"))
            results = [policy.run_shards("train", batch, {}, [rows], 0.0, None) for batch in updates]
            return results, weights_of_every_rank(policy, stage)

        guarded, guarded_weights = run([clean, bad, clean])
        reference, reference_weights = run([clean, clean])

    assert [[r["skipped"] for r in per_rank] for per_rank in guarded] == [[[False]] * 2, [[True]] * 2, [[False]] * 2]
    stats = reduce_train_stats(guarded[1], "policy")
    assert stats["policy/skipped_updates"] == 1 and "policy/loss" not in stats and "policy/grad_norm" not in stats
    # 2 updates into a 4-step warmup
    assert guarded[2][0]["lr"] == reference[1][0]["lr"] == pytest.approx(1e-3 * 3 / 4)
    for rank_weights in guarded_weights[1:]:                 # replicas agree (ZeRO-0/2 hold the whole model)
        for name, tensor in rank_weights.items():
            assert torch.equal(tensor, guarded_weights[0][name]), name
    for name, tensor in reference_weights[0].items():        # = the run that never saw the NaN
        assert torch.isfinite(guarded_weights[0][name]).all(), name
        assert torch.equal(guarded_weights[0][name], tensor), name
