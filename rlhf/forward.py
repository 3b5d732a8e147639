"""The forward passes and objectives of a PPO step on a batch of sequences, for any model (a plain module or a
DeepSpeed engine): log-probs (and entropy) of the response tokens, per-token values, the policy and value
objectives of a micro-batch, and a reward model's score of each sequence. The role workers (`actors/`) and the
one-process floor of `rlhf bench --floor` (`rlhf/floor.py`) both run these, so the two compute the same thing."""
from __future__ import annotations

import inspect

import torch

from .algo.logprobs import response_slice, token_logprobs_and_entropy
from .algo.losses import entropy_loss, kl_loss, policy_loss, value_loss
from .algo.rewards import last_token_values
from .batches import flatten_rankings, split_shared_prefixes, unflatten_scores
from .experience import widen
from .lora import plain_model


def model_outputs(model, exp, device, **kwargs):
    """`model` on a batch's sequences (attention mask and position ids of its left padding)."""
    return model(input_ids=exp.sequences.to(device), attention_mask=exp.attention_mask.to(device),
                 position_ids=exp.position_ids.to(device), **kwargs)


def keeps_logits(model) -> bool:
    """Whether the model's forward takes `logits_to_keep` (logits of the last positions only)."""
    module = plain_model(getattr(model, "module", model))
    return "logits_to_keep" in inspect.signature(module.forward).parameters


def response_token_stats(model, exp, device, temperature: float, chunk_positions: int = 0,
                         with_entropy: bool = False, keeps: bool | None = None):
    """(log-probs of the sampled response tokens, their entropy or zeros), each (B, R), at the rollout
    temperature. The model runs on the batch's real lengths (`Experience.trimmed`), computes logits for the
    response positions only (`logits_to_keep`, where the model takes it: `keeps`), and the fp32 log-softmax runs
    `chunk_positions` positions at a time; zeros past the longest real response."""
    width, exp = exp.response_length, exp.trimmed()
    R = exp.response_length
    keeps = keeps_logits(model) if keeps is None else keeps
    if keeps:
        logits = model_outputs(model, exp, device, logits_to_keep=R + 1).logits[:, :-1]
    else:
        logits = response_slice(model_outputs(model, exp, device).logits, exp.prompt_length, R)
    logprobs, entropy = token_logprobs_and_entropy(logits, exp.responses.to(device), temperature, chunk_positions,
                                                   with_entropy)
    return widen(logprobs, width), widen(entropy, width)


def response_values(model, exp, device) -> torch.Tensor:
    """V(s_t) of a scalar-head model at every response position, (B, R), fp32 (run on the real lengths; zeros
    past the longest real response)."""
    width, exp = exp.response_length, exp.trimmed()
    out = model_outputs(model, exp, device).logits[..., 0]
    return widen(response_slice(out, exp.prompt_length, exp.response_length).float(), width)


def token_scores(model, ids, mask, device) -> torch.Tensor:
    """One score per row of left-padded token ids: a scalar-head model's output at the last real token, (B,)."""
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device))
    return last_token_values(out.logits[..., 0], mask.to(device))


def checkpoints_activations(module) -> bool:
    """Whether an HF model recomputes activations in backward (the property's name changed in transformers 5)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if isinstance(getattr(type(module), name, None), property):
            return bool(getattr(module, name))
    return False


def ranking_scores(model, batch, device) -> torch.Tensor:
    """A scalar-head model's score of every response of a RankingBatch, (P, K) with zeros where there is none.
    Each prompt's shared prefix runs once: its keys and values are cached and handed to the K continuations (the
    same scores as `token_scores` of the whole sequences, up to float rounding, for about half the work when the
    prompt is the longer part). Under gradient checkpointing, which drops caches, the whole sequences run."""
    from transformers import DynamicCache

    module = plain_model(getattr(model, "module", model))
    if checkpoints_activations(module) and module.training:
        ids, mask, valid = flatten_rankings(batch)
        return unflatten_scores(token_scores(model, ids, mask, device).float(), valid.to(device))
    rows = split_shared_prefixes(batch)
    prefix_mask, owner = rows.prefix_mask.to(device), rows.owner.to(device)
    cache = DynamicCache()
    keyword = "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"
    model(input_ids=rows.prefix_ids.to(device), attention_mask=prefix_mask,
          position_ids=(prefix_mask.cumsum(dim=1) - 1).clamp(min=0), use_cache=True, **{keyword: cache})
    cache.batch_select_indices(owner)
    tail_mask = rows.tail_mask.to(device)
    positions = prefix_mask.sum(dim=1)[owner][:, None] + torch.arange(tail_mask.shape[1], device=device)[None, :]
    out = model(input_ids=rows.tail_ids.to(device), attention_mask=torch.cat([prefix_mask[owner], tail_mask], dim=1),
                position_ids=positions, use_cache=True, **{keyword: cache})
    return unflatten_scores(last_token_values(out.logits[..., 0].float(), tail_mask), (batch.ranks > 0).to(device))


def sequence_scores(model, exp, device) -> torch.Tensor:
    """`token_scores` of a batch's sequences, run on their real lengths."""
    exp = exp.trimmed()
    return token_scores(model, exp.sequences, exp.attention_mask, device)


def policy_objective(logprobs, entropies, micro, ppo, kl_coef: float, global_tokens: float, device):
    """The policy's loss on a micro-batch: clipped PPO surrogate, minus `ppo.ent_coef` x entropy, plus the KL as
    a loss term when `ppo.kl_mode` is 'loss'; token sums over the global minibatch's `global_tokens`.
    Returns (loss, stats) (PPO-ptx is added by the caller: it needs the model again)."""
    mask = micro.response_mask.to(device)
    loss, stats = policy_loss(logprobs, micro.old_logprobs.to(device), micro.advantages.to(device), mask,
                              ppo.clip_eps, global_tokens)
    stats["policy/pg_loss"] = loss.detach()
    entropy = entropy_loss(entropies, mask, global_tokens)
    stats["policy/entropy"] = entropy.detach()
    if ppo.ent_coef > 0:
        loss = loss - ppo.ent_coef * entropy
    if ppo.kl_mode == "loss":
        kl = kl_loss(logprobs, micro.reference_logprobs.to(device), mask, ppo.kl_estimator, global_tokens)
        stats["policy/kl_loss"] = kl.detach()
        loss = loss + kl_coef * kl
    return loss, stats


def value_objective(values, micro, ppo, global_tokens: float, device):
    """The value model's loss on a micro-batch (clipped, times `ppo.value_coef`) and its stats."""
    loss, stats = value_loss(values, micro.values.to(device), micro.returns.to(device),
                             micro.response_mask.to(device), ppo.value_clip_eps, global_tokens)
    stats["value/loss"] = loss.detach()
    return ppo.value_coef * loss, stats
