"""Token batches for supervised stages: SFT (sequences with a loss mask on response tokens) and reward-model
rankings (K responses per prompt). Like `Experience`, they select rows, so `rlhf.sharding` splits them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


class _Rows:
    def select(self, rows):
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

    @classmethod
    def concat(cls, parts: list):
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)})

    def __len__(self) -> int:
        return getattr(self, dataclasses.fields(self)[0].name).shape[0]


@dataclass
class TokenBatch(_Rows):
    """input_ids, attention_mask (B, L) right-padded; loss_mask (B, L) is 1 where token t is a training target
    (response tokens and the closing EOS; never prompt or padding)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor


@dataclass
class RankingBatch(_Rows):
    """One row per prompt: its K responses (padded to the batch's largest K with empty rows).

    input_ids, attention_mask (P, K, L) right-padded prompt + response; ranks (P, K) with 1 = best, 0 = no response.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    ranks: torch.Tensor


def collate_sft(samples: list[tuple[list[int], list[int]]], pad_id: int) -> TokenBatch:
    """(prompt ids, response ids incl. EOS) pairs -> right-padded TokenBatch with the loss on response tokens."""
    width = max(len(p) + len(r) for p, r in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(samples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(samples), width), dtype=torch.float)
    for i, (prompt, response) in enumerate(samples):
        n = len(prompt) + len(response)
        ids[i, :n] = torch.tensor(prompt + response)
        attention[i, :n] = 1
        loss_mask[i, len(prompt):n] = 1
    return TokenBatch(ids, attention, loss_mask)


def collate_rankings(groups: list[tuple[list[list[int]], list[int]]], pad_id: int) -> RankingBatch:
    """[(K token sequences, K ranks)] -> RankingBatch."""
    k_max = max(len(seqs) for seqs, _ in groups)
    width = max(len(s) for seqs, _ in groups for s in seqs)
    ids = torch.full((len(groups), k_max, width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(groups), k_max, width), dtype=torch.long)
    ranks = torch.zeros((len(groups), k_max), dtype=torch.long)
    for p, (seqs, group_ranks) in enumerate(groups):
        for k, seq in enumerate(seqs):
            ids[p, k, :len(seq)] = torch.tensor(seq)
            attention[p, k, :len(seq)] = 1
        ranks[p, :len(group_ranks)] = torch.tensor(group_ranks)
    return RankingBatch(ids, attention, ranks)


def length_grouped_order(lengths: list[int], batch_size: int, seed: int, pool: int = 50) -> list[list[int]]:
    """Padding-aware batching: shuffle, sort by length within pools of `pool` batches, cut into batches, shuffle
    the batches. Rows of similar length share a batch, so little compute goes to padding. Drops the ragged tail."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def flatten_rankings(batch: RankingBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The real responses of a RankingBatch as one (N, L) batch, N = sum of K over prompts: each response is
    scored by exactly one forward pass, and all C(K,2) pairs of a prompt reuse those K scores.
    Returns (input_ids, attention_mask, valid) with `valid` (P, K) to scatter scores back."""
    valid = batch.ranks > 0
    return batch.input_ids[valid], batch.attention_mask[valid], valid


def unflatten_scores(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    out = scores.new_zeros(valid.shape)
    out[valid] = scores
    return out
