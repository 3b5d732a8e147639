"""Advantage estimators: GAE with a learned value, and the critic-free GRPO, RLOO and REINFORCE++.

All take per-token rewards (B, R) on response tokens (mask 1) and return (advantages, returns), both (B, R),
zero on masked positions.
"""
import torch

from .masked import masked_whiten

ESTIMATORS = ("gae", "grpo", "rloo", "reinforce++")


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


def group_baseline_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int, method: str, eps: float = 1e-6):
    """Critic-free advantages from a group of `group_size` samples of the same prompt (rows grouped contiguously).

    The sequence return R_i = sum_t r_t (KL penalty included when folded into the reward) is compared with the other
    samples of its prompt, and the result is given to every token of the response:
      - GRPO (Shao et al. 2024, DeepSeekMath, sec. 4.1.2): A_i = (R_i - mean_g R) / (std_g R + eps)
      - RLOO (Ahmadian et al. 2024, "Back to Basics"): A_i = R_i - 1/(k-1) sum_{j != i} R_j
    """
    if group_size < 2:
        raise ValueError(f"{method} needs at least 2 samples per prompt, got {group_size}")
    sequence_returns = (rewards * mask).sum(dim=1).view(-1, group_size)
    if method == "grpo":
        mean = sequence_returns.mean(dim=1, keepdim=True)
        std = sequence_returns.std(dim=1, keepdim=True)
        per_sequence = (sequence_returns - mean) / (std + eps)
    elif method == "rloo":
        others_mean = (sequence_returns.sum(dim=1, keepdim=True) - sequence_returns) / (group_size - 1)
        per_sequence = sequence_returns - others_mean
    else:
        raise ValueError(f"unknown group method {method!r}")
    advantages = per_sequence.view(-1, 1) * mask
    return advantages, sequence_returns.view(-1, 1) * mask


def reinforce_plus_plus(rewards: torch.Tensor, mask: torch.Tensor, gamma: float):
    """REINFORCE++ (Hu 2025): per-token discounted returns G_t, whitened over the global batch, as advantages."""
    returns = discounted_returns(rewards, mask, gamma)
    return masked_whiten(returns, mask), returns
