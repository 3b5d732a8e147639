"""Token log-probabilities and entropy from logits.

Log-probs are taken from logits divided by the sampling temperature, so that the policy ratio in PPO compares the
same distribution the rollout sampled from (Huang et al. 2022, "N implementation details", 'temperature').
"""
import torch


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[label] for every position: logits (B, T, V), labels (B, T) -> (B, T)."""
    logits = logits.float() / temperature
    return torch.gather(logits.log_softmax(dim=-1), 2, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """H(p) = logsumexp(z) - sum_v p_v z_v with z = logits / T, per position: (B, T, V) -> (B, T)."""
    logits = logits.float() / temperature
    probs = logits.softmax(dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def response_slice(tensor: torch.Tensor, prompt_length: int, response_length: int) -> torch.Tensor:
    """Positions of a (B, T, ...) model output that predict the response tokens.

    The output at position t predicts token t+1, so the response tokens sequences[:, P:P+R] are predicted by
    outputs[:, P-1:P+R-1].
    """
    return tensor[:, prompt_length - 1 : prompt_length - 1 + response_length]
