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

    input_ids, attention_mask (P, K, L) right-padded prompt + response; ranks (P, K) with 1 = best, 0 = no response;
    prefix_lengths (P,) the tokens all K sequences of a prompt begin with (the prompt, and more where the responses
    open alike), short of the shortest sequence by at least one token: the model can read them once per prompt.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    ranks: torch.Tensor
    prefix_lengths: torch.Tensor


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
    prefixes = torch.tensor([shared_prefix_length(seqs) for seqs, _ in groups], dtype=torch.long)
    return RankingBatch(ids, attention, ranks, prefixes)


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """How many leading tokens all `sequences` share, leaving each at least one token of its own."""
    limit = min(len(s) for s in sequences) - 1
    length = 0
    while length < limit and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


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
    scored once, and all C(K,2) pairs of a prompt reuse those K scores.
    Returns (input_ids, attention_mask, valid) with `valid` (P, K) to scatter scores back."""
    valid = batch.ranks > 0
    return batch.input_ids[valid], batch.attention_mask[valid], valid


def unflatten_scores(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    out = scores.new_zeros(valid.shape)
    out[valid] = scores
    return out


@dataclass
class SharedPrefixRows:
    """A RankingBatch cut for reading each prompt's shared prefix once: prefix_ids, prefix_mask (P, A) left-padded;
    tail_ids, tail_mask (N, T) right-padded, the rest of each real response's sequence (N = sum of K over
    prompts, in `flatten_rankings` order); owner (N,) the prompt each tail continues."""

    prefix_ids: torch.Tensor
    prefix_mask: torch.Tensor
    tail_ids: torch.Tensor
    tail_mask: torch.Tensor
    owner: torch.Tensor


def split_shared_prefixes(batch: RankingBatch) -> SharedPrefixRows:
    valid = batch.ranks > 0
    prefix = batch.prefix_lengths
    width = int(prefix.max())
    columns = torch.arange(width)
    # left padding: prompt p's prefix fills the last prefix[p] columns
    starts = (width - prefix)[:, None]
    prefix_mask = (columns[None, :] >= starts).long()
    source = (columns[None, :] - starts).clamp(min=0)
    prefix_ids = batch.input_ids[:, 0, :].gather(1, source) * prefix_mask
    owner = valid.nonzero()[:, 0]
    ids = batch.input_ids[valid]
    tail_lengths = batch.attention_mask[valid].sum(dim=1) - prefix[owner]
    tail_columns = torch.arange(int(tail_lengths.max()))
    tail_mask = (tail_columns[None, :] < tail_lengths[:, None]).long()
    source = (prefix[owner][:, None] + tail_columns[None, :]).clamp(max=ids.shape[1] - 1)
    return SharedPrefixRows(prefix_ids, prefix_mask, ids.gather(1, source) * tail_mask, tail_mask, owner)
