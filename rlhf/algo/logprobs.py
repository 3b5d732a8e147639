"""Token log-probabilities and entropy from logits.

Log-probs are taken from logits divided by the sampling temperature, so that the policy ratio in PPO compares the
same distribution the rollout sampled from (Huang et al. 2022, "N implementation details", 'temperature').

`token_logprobs_and_entropy` computes both a chunk of positions at a time: the fp32 copy of the full-vocabulary
logits (and its softmax) exists for one chunk only, and under autograd each chunk is recomputed in the backward
pass instead of being kept, so a micro-batch of long sequences never holds its fp32 logits at once.
"""
import torch
from torch.utils.checkpoint import checkpoint


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[label] for every position: logits (B, T, V), labels (B, T) -> (B, T)."""
    logits = logits.float() / temperature
    return torch.gather(logits.log_softmax(dim=-1), 2, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """H(p) = logsumexp(z) - sum_v p_v z_v with z = logits / T, per position: (B, T, V) -> (B, T)."""
    logits = logits.float() / temperature
    probs = logits.softmax(dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def _chunk_stats(logits: torch.Tensor, labels: torch.Tensor, temperature: float, with_entropy: bool):
    z = logits.float() / temperature
    normalizer = torch.logsumexp(z, dim=-1)
    logprobs = torch.gather(z, -1, labels.unsqueeze(-1)).squeeze(-1) - normalizer
    if not with_entropy:
        return logprobs, torch.zeros_like(logprobs)
    return logprobs, normalizer - (z.softmax(dim=-1) * z).sum(dim=-1)


def token_logprobs_and_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                               chunk_positions: int = 0, with_entropy: bool = True):
    """(log-probs of `labels`, entropy), each (B, T), from logits (B, T, V) of any dtype, `chunk_positions`
    positions (of T) at a time (0: all at once). Equal to `logprobs_from_logits` / `entropy_from_logits`."""
    step = chunk_positions or logits.shape[1]
    if step >= logits.shape[1]:
        return _chunk_stats(logits, labels, temperature, with_entropy)
    parts = []
    for start in range(0, logits.shape[1], step):
        args = (logits[:, start:start + step], labels[:, start:start + step], temperature, with_entropy)
        parts.append(checkpoint(_chunk_stats, *args, use_reentrant=False) if torch.is_grad_enabled()
                     else _chunk_stats(*args))
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


def response_slice(tensor: torch.Tensor, prompt_length: int, response_length: int) -> torch.Tensor:
    """Positions of a (B, T, ...) model output that predict the response tokens.

    The output at position t predicts token t+1, so the response tokens sequences[:, P:P+R] are predicted by
    outputs[:, P-1:P+R-1].
    """
    return tensor[:, prompt_length - 1 : prompt_length - 1 + response_length]
