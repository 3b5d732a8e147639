"""The batch that travels between roles: one dataclass of tensors, sliced into shards for actors (`rlhf.sharding`)
and concatenated back, sent through the Ray object store as a single object."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Experience:
    """Rows are samples; prompts are left-padded to `prompt_length`, responses right-padded to `response_length`.

    sequences       (B, P + R) prompt then response token ids
    attention_mask  (B, P + R) 1 on real prompt tokens and real response tokens (up to and including EOS)
    response_mask   (B, R)     float, 1 on real response tokens
    ends_with_eos   (B,)       bool, the response stopped at EOS (not at the token limit)
    prompt_index    (B,)       row of the prompt in the dataset (samples of one prompt are contiguous)
    rollout_logprobs (B, R)    log-probs of the sampled tokens by the rollout engine's model (0 on padding)
    Filled later by the scoring roles and the core: old_logprobs, reference_logprobs, values, scores (B,),
    rewards, advantages, returns (all (B, R)).
    The driver holds a batch `without_tokens`: token ids stay with the actors, in the object store.
    """

    sequences: Optional[torch.Tensor]          # None in the driver's view (`without_tokens`)
    attention_mask: Optional[torch.Tensor]
    response_mask: torch.Tensor
    ends_with_eos: torch.Tensor
    prompt_index: torch.Tensor
    prompt_length: int
    rollout_logprobs: Optional[torch.Tensor] = None
    old_logprobs: Optional[torch.Tensor] = None
    reference_logprobs: Optional[torch.Tensor] = None
    values: Optional[torch.Tensor] = None
    scores: Optional[torch.Tensor] = None
    rewards: Optional[torch.Tensor] = None
    advantages: Optional[torch.Tensor] = None
    returns: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.response_mask.shape[0]

    @property
    def response_length(self) -> int:
        return self.response_mask.shape[1]

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_length:]

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions counted over real tokens only, as `generate` does with left padding."""
        return (self.attention_mask.cumsum(dim=1) - 1).clamp(min=0)

    def _tensor_fields(self):
        return [f.name for f in dataclasses.fields(self) if f.name != "prompt_length"]

    def select(self, rows) -> "Experience":
        """Rows by slice or index tensor; None fields stay None."""
        values = {name: (None if getattr(self, name) is None else getattr(self, name)[rows])
                  for name in self._tensor_fields()}
        return Experience(prompt_length=self.prompt_length, **values)

    def trimmed(self) -> "Experience":
        """The same rows without the columns that are padding in every row: prompt columns before the earliest
        real prompt token, response columns after the longest real response (at least one). A model sees the same
        tokens at the same positions (position ids count real tokens), so forward passes over it give the same
        outputs on real tokens for less work; `widen` puts response-shaped outputs back to the full width."""
        prompt_real = self.attention_mask[:, :self.prompt_length].any(dim=0).nonzero()
        start = int(prompt_real[0]) if len(prompt_real) else self.prompt_length - 1
        width = max(1, int(self.response_mask.sum(dim=1).max())) if len(self) else 1
        if start == 0 and width >= self.response_length:
            return self
        values = {}
        for name in self._tensor_fields():
            tensor = getattr(self, name)
            if tensor is None or tensor.dim() == 1:
                values[name] = tensor
            elif name in ("sequences", "attention_mask"):
                values[name] = tensor[:, start:self.prompt_length + width]
            else:
                values[name] = tensor[:, :width]
        return Experience(prompt_length=self.prompt_length - start, **values)

    def without_tokens(self) -> "Experience":
        """The same rows without token ids and attention mask: what the driver needs for advantages and logs."""
        return self.replace(sequences=None, attention_mask=None)

    def replace(self, **changes) -> "Experience":
        return dataclasses.replace(self, **changes)

    @staticmethod
    def concat(parts: list["Experience"]) -> "Experience":
        first = parts[0]
        values = {}
        for name in first._tensor_fields():
            tensors = [getattr(p, name) for p in parts]
            values[name] = None if tensors[0] is None else torch.cat(tensors)
        return Experience(prompt_length=first.prompt_length, **values)

    @staticmethod
    def from_pairs(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> "Experience":
        """A batch of given (prompt ids, response ids) pairs, e.g. texts to score: prompts left-padded, responses
        right-padded; every row is marked as ending with EOS (encode each response with its EOS)."""
        prompt_length = max(len(p) for p, _ in pairs)
        response_length = max(1, max(len(r) for _, r in pairs))
        rows = len(pairs)
        sequences = torch.full((rows, prompt_length + response_length), pad_id, dtype=torch.long)
        attention = torch.zeros_like(sequences)
        response_mask = torch.zeros(rows, response_length)
        for i, (prompt, response) in enumerate(pairs):
            sequences[i, prompt_length - len(prompt):prompt_length] = torch.tensor(prompt, dtype=torch.long)
            attention[i, prompt_length - len(prompt):prompt_length] = 1
            if response:
                sequences[i, prompt_length:prompt_length + len(response)] = torch.tensor(response, dtype=torch.long)
                attention[i, prompt_length:prompt_length + len(response)] = 1
                response_mask[i, :len(response)] = 1
        return Experience(sequences=sequences, attention_mask=attention, response_mask=response_mask,
                          ends_with_eos=torch.ones(rows, dtype=torch.bool), prompt_index=torch.arange(rows),
                          prompt_length=prompt_length)


def widen(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """A (B, R') response-shaped tensor zero-padded on the right to (B, width) (autograd flows through)."""
    missing = width - tensor.shape[1]
    return torch.nn.functional.pad(tensor, (0, missing)) if missing > 0 else tensor
