"""One PPO step's math between scoring and training, on the whole rollout batch (so whitening is global):
scores -> shaped scores -> per-token KL -> token rewards -> advantages and returns. Plus the minibatch plan."""
from __future__ import annotations

import torch

from ..experience import Experience
from . import advantages as adv
from .kl import kl_estimate
from .masked import RunningMoments, masked_mean
from .rewards import shape_scores, token_rewards


def compute_advantages(exp: Experience, ppo, reward_cfg, kl_coef: float, group_size: int,
                       normalizer: RunningMoments | None) -> tuple[Experience, dict]:
    """Fill rewards, advantages and returns of `exp`; return it with the step's reward and KL statistics.

    `ppo` and `reward_cfg` are the config sections (PPOConfig, RewardConfig).
    """
    mask = exp.response_mask
    scores = shape_scores(exp.scores, exp.ends_with_eos, reward_cfg.missing_eos_penalty,
                          normalizer if reward_cfg.normalization == "running" else None, reward_cfg.clip)
    kl = kl_estimate(exp.old_logprobs, exp.reference_logprobs, ppo.kl_estimator) * mask
    penalty_coef = kl_coef if ppo.kl_mode == "reward" else 0.0
    rewards = token_rewards(scores, kl, mask, penalty_coef)

    estimator = adv.ESTIMATORS[ppo.advantage_estimator]
    advantages, returns = estimator.estimate(rewards, mask, exp.values, ppo, group_size)

    sequence_kl = kl.sum(dim=1)
    stats = {
        "reward/score_mean": exp.scores.float().mean().item(),
        "reward/score_std": exp.scores.float().std().item() if len(exp) > 1 else 0.0,
        "reward/shaped_score_mean": scores.mean().item(),
        "reward/total_mean": rewards.sum(dim=1).mean().item(),
        "kl/sequence_mean": sequence_kl.mean().item(),
        "kl/token_mean": masked_mean(kl, mask).item(),
        "kl/coef": kl_coef,
        "advantages/mean": masked_mean(advantages, mask).item(),
        "returns/mean": masked_mean(returns, mask).item(),
        "response/length_mean": mask.sum(dim=1).mean().item(),
        "response/eos_fraction": exp.ends_with_eos.float().mean().item(),
    }
    if exp.values is not None:
        stats["value/mean"] = masked_mean(exp.values, mask).item()
    if exp.rollout_logprobs is not None:
        # the rollout engine's model against the policy's on the same tokens: ~0 when weight sync is exact
        stats["rollout/logprob_gap"] = masked_mean((exp.rollout_logprobs - exp.old_logprobs).abs(), mask).item()
    return exp.replace(rewards=rewards, advantages=advantages, returns=returns), stats


def minibatch_plan(batch_size: int, num_minibatches: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """Row indices of every minibatch of every epoch, stratified: per epoch, each run of `num_minibatches`
    consecutive rows is shuffled (seeded) and deals one row to each minibatch; the minibatches are then taken in a
    seeded order.

    Why stratified: a data-parallel rank owns a contiguous block of the batch (`rlhf.sharding`) whose size is a
    multiple of `num_minibatches` (minibatch = ranks x micro x accumulation), so it holds the same number of rows of
    every minibatch as every other rank, and trains on its own block only: no rank needs another's rows. The plan
    depends only on (batch_size, seed), so every data-parallel layout trains on the same minibatches. Every row is
    used once per epoch: a batch that does not split into equal minibatches is refused.
    """
    if batch_size % num_minibatches:
        raise ValueError(f"{batch_size} rows do not split into {num_minibatches} equal minibatches")
    generator = torch.Generator().manual_seed(seed)
    runs = batch_size // num_minibatches
    plan = []
    for _ in range(epochs):
        # deal[r, m]: the row of run r that goes to minibatch m
        deal = torch.stack([torch.randperm(num_minibatches, generator=generator) for _ in range(runs)])
        deal += torch.arange(runs).unsqueeze(1) * num_minibatches
        order = torch.randperm(num_minibatches, generator=generator)
        plan += [deal[:, m] for m in order.tolist()]
    return plan
