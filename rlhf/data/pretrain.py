"""PPO-ptx pretraining texts: load, tokenize (truncated), and serve right-padded batches in a restorable order."""
from __future__ import annotations

import torch

from .loading import DataError, load_records, require_text
from .prompts import PromptStream


class PretrainTexts:
    """Tokenized texts and a seeded stream over them; `next_batch(n)` -> (input_ids, attention_mask)."""

    def __init__(self, spec: str, text_key: str, tokenizer, max_length: int, seed: int, split: str = "train"):
        rows = load_records(spec, split, key="data.ptx")
        texts = [require_text(row, text_key, spec, i) for i, row in enumerate(rows)]
        ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        self.ids = [row for row in ids if len(row) >= 2]
        if not self.ids:
            raise DataError(f"{spec}: no text has 2 or more tokens")
        self.pad_id = tokenizer.pad_token_id
        self.stream = PromptStream(len(self.ids), seed, "ptx_order")

    def next_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.ids[i] for i in self.stream.next_indices(size)]
        width = max(len(r) for r in rows)
        input_ids = torch.full((size, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        return input_ids, mask
