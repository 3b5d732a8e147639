"""Advantage estimators: GAE with a learned value, and the critic-free GRPO, RLOO and REINFORCE++.

All take per-token rewards (B, R) on response tokens (mask 1) and return (advantages, returns), both (B, R),
zero on masked positions.
"""
from dataclasses import dataclass
from typing import Callable

import torch

from .masked import masked_whiten


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalized Advantage Estimation (Schulman et al. 2016, eq. 16):

        delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last response token is 0)
        A_t     = delta_t + gamma * lam * A_{t+1}
        returns = A_t + V_t                              (the value target)
    """
    rewards, values = rewards * mask, values * mask
    length = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
    return advantages, (advantages + values) * mask


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{k >= t} gamma^(k - t) r_k over response tokens."""
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns * mask


def _sequence_returns(rewards: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """R_i = sum_t r_t per sample (KL penalty included when folded into the reward), as (prompts, group_size)."""
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(f"a group baseline needs >= 2 samples per prompt and whole groups; got group size "
                         f"{group_size} for {rewards.shape[0]} rows")
    return (rewards * mask).sum(dim=1).view(-1, group_size)


def grpo(rewards: torch.Tensor, mask: torch.Tensor, group_size: int, eps: float = 1e-6):
    """GRPO (Shao et al. 2024, DeepSeekMath, sec. 4.1.2), outcome supervision: every token of sample i gets

        A_i = (R_i - mean_g R) / (std_g R + eps)       over the `group_size` samples of its prompt (rows contiguous)
    """
    returns = _sequence_returns(rewards, mask, group_size)
    mean, std = returns.mean(dim=1, keepdim=True), returns.std(dim=1, keepdim=True)
    return ((returns - mean) / (std + eps)).view(-1, 1) * mask, returns.view(-1, 1) * mask


def rloo(rewards: torch.Tensor, mask: torch.Tensor, group_size: int):
    """RLOO (Ahmadian et al. 2024, "Back to Basics"): the leave-one-out baseline, for every token of sample i

        A_i = R_i - 1/(k-1) * sum_{j != i} R_j
    """
    returns = _sequence_returns(rewards, mask, group_size)
    others_mean = (returns.sum(dim=1, keepdim=True) - returns) / (group_size - 1)
    return (returns - others_mean).view(-1, 1) * mask, returns.view(-1, 1) * mask


def reinforce_plus_plus(rewards: torch.Tensor, mask: torch.Tensor, gamma: float):
    """REINFORCE++ (Hu 2025): per-token discounted returns G_t, whitened over the global batch, as advantages."""
    returns = discounted_returns(rewards, mask, gamma)
    return masked_whiten(returns, mask), returns


# ---- the table the config's `ppo.advantage_estimator` choices come from -------------------------------------------

@dataclass(frozen=True)
class Estimator:
    """`estimate(rewards, mask, values, ppo, group_size) -> (advantages, returns)`; `ppo` is the PPOConfig."""

    estimate: Callable
    uses_critic: bool          # a value role is started and trained
    min_group_size: int = 1    # samples per prompt it needs


def _gae(rewards, mask, values, ppo, group_size):
    advantages, returns = gae(rewards, values, mask, ppo.gamma, ppo.lam)
    return (masked_whiten(advantages, mask) if ppo.whiten_advantages else advantages), returns


ESTIMATORS: dict[str, Estimator] = {
    "gae": Estimator(_gae, uses_critic=True),
    "grpo": Estimator(lambda rewards, mask, values, ppo, n: grpo(rewards, mask, n), uses_critic=False, min_group_size=2),
    "rloo": Estimator(lambda rewards, mask, values, ppo, n: rloo(rewards, mask, n), uses_critic=False, min_group_size=2),
    "reinforce++": Estimator(lambda rewards, mask, values, ppo, n: reinforce_plus_plus(rewards, mask, ppo.gamma),
                             uses_critic=False),
}
