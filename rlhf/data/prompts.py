"""Prompts for rollouts: load, validate, tokenize once, and stream batches in a seeded order that a checkpoint
can restore exactly (epoch, position)."""
from __future__ import annotations

import torch

from ..seeding import derive_seed
from .loading import DataError, at_row, load_rows, require_text


def load_prompt_texts(spec: str, input_key: str, split: str = "train", key: str = "data.prompts") -> tuple[list[str], str]:
    """Validated prompt strings from a file, folder, hub name or 'toy:<task>'. Returns (prompts, source)."""
    rows, source = load_rows(spec, "prompts", split, key), spec
    return [require_text(row, input_key, source, i) for i, row in enumerate(rows)], source


def format_prompt(text: str, tokenizer, apply_chat_template: bool) -> str:
    if not apply_chat_template:
        return text
    if tokenizer.chat_template is None:
        raise DataError("data.apply_chat_template: the tokenizer has no chat template")
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def tokenize_prompts(texts: list[str], tokenizer, max_length: int, source: str, apply_chat_template: bool = False):
    """Token ids of every prompt; a prompt over `max_length` tokens is an error naming its row."""
    formatted = [format_prompt(t, tokenizer, apply_chat_template) for t in texts]
    ids = tokenizer(formatted, add_special_tokens=False)["input_ids"]
    for index, row in enumerate(ids):
        if len(row) > max_length:
            raise DataError(f"{at_row(source, index)}: prompt has {len(row)} tokens, over data.max_prompt_length "
                            f"{max_length}")
        if not row:
            raise DataError(f"{at_row(source, index)}: prompt is empty after tokenization")
    return formatted, ids


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both (B, max_len), padded on the left as generation needs."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
    return ids, mask


class PromptStream:
    """Endless batches of row indices, reshuffled each epoch by the seed stream (run seed, `purpose`, epoch)."""

    def __init__(self, num_rows: int, seed: int, purpose: str = "prompt_order"):
        self.num_rows, self.seed, self.purpose = num_rows, seed, purpose
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.purpose, self.epoch))
        return torch.randperm(self.num_rows, generator=generator).tolist()

    def next_indices(self, count: int) -> list[int]:
        out = []
        while len(out) < count:
            if self.position == self.num_rows:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            take = min(count - len(out), self.num_rows - self.position)
            out += self._order[self.position:self.position + take]
            self.position += take
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation()
