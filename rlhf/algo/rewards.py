"""From reward-model scores to per-token PPO rewards.

InstructGPT (Ouyang et al. 2022, eq. 2): the reward of a response is the reward-model score minus a per-token KL
penalty to the SFT (reference) model. The score is placed on the last response token (Huang et al. 2022,
"N implementation details", 'reward is given at the last token'); every token gets -beta * KL_t.
"""
import torch

from .masked import RunningMoments


def last_token_index(response_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real response token of each row (0 for an empty response)."""
    return (response_mask.sum(dim=1).long() - 1).clamp(min=0)


def shape_scores(
    scores: torch.Tensor,
    ends_with_eos: torch.Tensor,
    missing_eos_penalty: float | None = None,
    normalizer: RunningMoments | None = None,
    clip: float | None = None,
) -> torch.Tensor:
    """Score post-processing, in order:

    1. missing-EOS penalty: a response that hit the token limit without EOS gets `missing_eos_penalty` added
       (Huang et al. 2022 replace it by a fixed low score; adding keeps it a config knob; None disables);
    2. normalization: (s - mean) / std with the running statistics of `normalizer` (updated with this batch first);
    3. clipping to [-clip, clip].
    """
    scores = scores.float().clone()
    if missing_eos_penalty is not None:
        scores = scores + missing_eos_penalty * (~ends_with_eos.bool()).float()
    if normalizer is not None:
        normalizer.update(scores)
        scores = (scores - normalizer.mean) / max(normalizer.std, 1e-8)
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, response_mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r_t = -beta * KL_t on every response token, plus the sequence score on the last one: (B,), (B, R) -> (B, R)."""
    rewards = -kl_coef * kl * response_mask
    rows = torch.arange(scores.shape[0])
    rewards[rows, last_token_index(response_mask)] += scores.to(rewards.dtype)
    return rewards


def last_token_values(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The scalar-head output at each row's last real token (left or right padding): (B, L), (B, L) -> (B,)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask * positions).argmax(dim=1)
    return values[torch.arange(values.shape[0], device=values.device), last]


def bias_normalization(reference_scores: torch.Tensor, mode: str) -> tuple[float, float]:
    """(shift, scale) so the reference set scores mean 0 ('shift') and also std 1 ('shift_scale'); InstructGPT
    normalized its reward model so labeler demonstrations score 0 on average. Applied as (s - shift) / scale."""
    if mode == "none":
        return 0.0, 1.0
    shift = reference_scores.float().mean().item()
    scale = max(reference_scores.float().std().item(), 1e-6) if mode == "shift_scale" else 1.0
    return shift, scale
