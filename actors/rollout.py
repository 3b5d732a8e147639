"""The rollout role: full policy weights in an inference replica and a rollout engine that samples responses."""
from __future__ import annotations

import torch

from rlhf.generation import ENGINES, SamplingParams
from rlhf.models import load_causal_lm, load_tokenizer
from rlhf.seeding import derive_seed
from rlhf.sharding import shard_slice

from .base import RoleWorker
from .weight_sync import decode


class RolloutWorker(RoleWorker):
    def setup(self, model_path: str, tokenizer_path: str) -> None:
        model = load_causal_lm(model_path, self.dtype).to(self.device)
        self.engine = ENGINES[self.cfg.rollout.engine](model, load_tokenizer(tokenizer_path), self.device)

    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_index: torch.Tensor,
                 params: SamplingParams, purpose: str, step: int):
        """Sample this actor's contiguous share of the prompts, seeded by the stream (purpose, step, rank)."""
        rows = shard_slice(prompt_ids.shape[0], self.rank, self.world_size)
        return self.engine.generate(prompt_ids[rows], prompt_mask[rows], prompt_index[rows], params,
                                    derive_seed(self.cfg.run.seed, purpose, step, self.rank))

    def load_weights(self, encoded_state: dict) -> None:
        self.engine.load_state_dict(decode(encoded_state))
