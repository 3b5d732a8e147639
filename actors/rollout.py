"""The rollout role: full policy weights in an inference replica and a rollout engine that samples responses."""
from __future__ import annotations

import torch

from rlhf.generation import HFGenerateEngine, SamplingParams
from rlhf.models import load_causal_lm, load_tokenizer

from .base import RoleWorker
from .weight_sync import decode


class RolloutWorker(RoleWorker):
    def setup(self, model_path: str, tokenizer_path: str) -> None:
        model = load_causal_lm(model_path, self.dtype).to(self.device)
        self.engine = HFGenerateEngine(model, load_tokenizer(tokenizer_path), self.device)

    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_index: torch.Tensor,
                 params: SamplingParams, seed: int):
        """Sample this actor's contiguous share of the prompts (seeded by step seed and rank)."""
        part = prompt_ids.shape[0] // self.world_size
        rows = slice(self.rank * part, (self.rank + 1) * part)
        return self.engine.generate(prompt_ids[rows], prompt_mask[rows], prompt_index[rows], params,
                                    seed * 131 + self.rank)

    def load_weights(self, encoded_state: dict) -> None:
        self.engine.load_state_dict(decode(encoded_state))
