"""Every training loss: PPO policy (clipped), value (clipped), entropy, KL-as-loss, language-model (ptx, SFT),
and InstructGPT's K-wise ranking loss.

Token losses are sums over this shard's tokens divided by `num_tokens`, the token count of the *global* (all
data-parallel ranks) minibatch, so that 1 and N actors compute the same gradient. When `num_tokens` is None the
shard's own count is used (single process).
"""
import itertools

import torch
import torch.nn.functional as F

from .masked import masked_sum


def _token_mean(values: torch.Tensor, mask: torch.Tensor, num_tokens) -> torch.Tensor:
    count = mask.sum() if num_tokens is None else num_tokens
    return masked_sum(values, mask) / max(float(count), 1.0)


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps: float, num_tokens=None):
    """Clipped surrogate (Schulman et al. 2017, PPO, eq. 7), negated to minimize:

        ratio_t = exp(log pi(a_t) - log pi_old(a_t))
        L = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))

    Returns (loss, stats) with clip fraction and approx KL = mean 0.5 * (log ratio)^2 (CleanRL's k2 estimate),
    both as masked sums over `num_tokens` so that they add up across ranks.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = _token_mean(torch.maximum(unclipped, clipped), mask, num_tokens)
    with torch.no_grad():
        stats = {
            "policy/clip_fraction": _token_mean((clipped > unclipped).float(), mask, num_tokens),
            "policy/approx_kl": _token_mean(0.5 * log_ratio**2, mask, num_tokens),
        }
    return loss, stats


def value_loss(values, old_values, returns, mask, clip_eps: float | None, num_tokens=None):
    """Clipped value loss (Huang et al. 2022, "N implementation details", 'value function loss clipping'):

        V_clip = V_old + clip(V - V_old, -eps, eps)
        L = 0.5 * mean_t max((V - R)^2, (V_clip - R)^2)          (no clipping when eps is None)
    """
    unclipped = (values - returns) ** 2
    if clip_eps is None:
        per_token = unclipped
        clip_fraction = torch.zeros(())
    else:
        values_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        clipped = (values_clipped - returns) ** 2
        per_token = torch.maximum(unclipped, clipped)
        clip_fraction = _token_mean((clipped > unclipped).float().detach(), mask, num_tokens)
    loss = 0.5 * _token_mean(per_token, mask, num_tokens)
    return loss, {"value/clip_fraction": clip_fraction}


def entropy_loss(entropy, mask, num_tokens=None):
    """Token-mean entropy H(pi); the policy objective subtracts ent_coef * H to keep exploring."""
    return _token_mean(entropy, mask, num_tokens)


def kl_loss(logprobs, reference_logprobs, mask, estimator: str, num_tokens=None):
    """Token-mean KL estimate used as a loss term instead of a reward penalty (GRPO, Shao et al. 2024, eq. 4)."""
    from .kl import kl_estimate

    return _token_mean(kl_estimate(logprobs, reference_logprobs, estimator), mask, num_tokens)


def token_nll(logits, labels):
    """-log p(x_t | x_<t) per token, (B, T): `logits[:, t]` predicts `labels[:, t]`."""
    return F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")


def lm_loss(logits, labels, mask, num_tokens=None):
    """Next-token cross-entropy -log p(x_t | x_<t), the token mean of `token_nll` on masked tokens.

    Used for PPO-ptx (InstructGPT eq. 2, the gamma * E_pretrain[log pi(x)] term) and for SFT (response tokens only).
    """
    return _token_mean(token_nll(logits, labels), mask, num_tokens)


def ranking_pairs(ranks: list[int]) -> list[tuple[int, int]]:
    """All (winner, loser) index pairs of one prompt's K ranked responses (rank 1 = best); ties are dropped."""
    return [(i, j) if ranks[i] < ranks[j] else (j, i)
            for i, j in itertools.combinations(range(len(ranks)), 2) if ranks[i] != ranks[j]]


def kwise_ranking_loss(rewards: torch.Tensor, pairs: list[tuple[int, int]], margin: float = 0.0):
    """InstructGPT reward-model loss (Ouyang et al. 2022, eq. 1) for one prompt:

        loss = -1/C(K,2) * sum_{(w, l)} log sigmoid(r_w - r_l - margin)

    `rewards` holds the K scores from K forward passes; every pair reuses them (no extra forward per pair).
    Returns (loss, accuracy over the pairs).
    """
    winners = torch.tensor([w for w, _ in pairs])
    losers = torch.tensor([l for _, l in pairs])
    diff = rewards[winners] - rewards[losers]
    loss = -F.logsigmoid(diff - margin).mean()
    return loss, (diff > 0).float().mean()


def ranking_batch_loss(rewards: torch.Tensor, ranks: torch.Tensor, margin: float = 0.0, num_prompts=None):
    """K-wise loss over a batch of prompts: rewards and ranks (P, K), rank 0 marks a missing response.

    Each prompt is one batch element: the mean of its C(K,2) pair losses (`kwise_ranking_loss`); the batch loss
    is the sum over prompts divided by `num_prompts` (the global batch's prompt count; this shard's when None).
    Returns (loss, stats) with stats as sums over `num_prompts` too, plus raw pair counts for exact accuracy.
    """
    losses, accuracies, pair_counts = ranking_prompt_losses(rewards, ranks, margin)
    total = losses.sum()
    count = float(num_prompts if num_prompts is not None else rewards.shape[0])
    return total / count, {"rm/loss": total.detach() / count, "rm/accuracy": accuracies.sum().item() / count,
                           "rm/correct_pairs": (accuracies * pair_counts).sum().item(),
                           "rm/pairs": pair_counts.sum().item()}


def ranking_prompt_losses(rewards: torch.Tensor, ranks: torch.Tensor, margin: float = 0.0):
    """Per prompt of a batch (rewards and ranks (P, K), rank 0 = no response): the K-wise loss
    (`kwise_ranking_loss`), the pair accuracy, and the number of pairs; three (P,) tensors."""
    losses, accuracies, pair_counts = [], [], []
    for prompt_rewards, prompt_ranks in zip(rewards, ranks):
        valid = prompt_ranks > 0
        pairs = ranking_pairs(prompt_ranks[valid].tolist())
        loss, accuracy = kwise_ranking_loss(prompt_rewards[valid], pairs, margin)
        losses.append(loss)
        accuracies.append(accuracy.detach())
        pair_counts.append(float(len(pairs)))
    return torch.stack(losses), torch.stack(accuracies).float(), torch.tensor(pair_counts)
