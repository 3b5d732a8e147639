"""The rollout role: full policy weights in an inference replica and a rollout engine that samples responses."""
from __future__ import annotations

import torch

from rlhf.generation import ENGINES, SamplingParams
from rlhf.models import load_causal_lm, load_tokenizer
from rlhf.seeding import derive_seed
from rlhf.sharding import shard_slice

from .base import RoleWorker
from .memory import release_freed_host_memory
from .weight_sync import DTYPES, SyncGroup, bucket_numel, decode, join_store


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
        """The object-store way: every tensor at once, by name (the names the collective way sends)."""
        named = list(decode(encoded_state).items())
        self.engine.check_weight_names([(name, tuple(tensor.shape)) for name, tensor in named])
        self.engine.load_weights(named)

    def join_weight_sync(self, host: str, port: int, world_size: int, timeout_s: float) -> None:
        """Join the weight-sync group as rank 1 + this actor's rank (the policy's rank 0 is rank 0)."""
        store = join_store(host, port, world_size, timeout_s)
        self.weight_sync = SyncGroup(store, 1 + self.rank, world_size, timeout_s, self.device)

    def check_weight_plan(self, plan: list) -> None:
        """Every name and shape the policy will send exists here (checked once, before the first sync)."""
        self.engine.check_weight_names([(name, shape) for bucket in plan for name, shape, _ in bucket])

    def receive_weights(self, plan: list) -> None:
        """The collective way: one broadcast per bucket, copied into the model in place."""
        for bucket in plan:
            flat = torch.empty(bucket_numel(bucket), dtype=DTYPES[bucket[0][2]], device=self.device)
            self.weight_sync.broadcast(flat)
            named, offset = [], 0
            for name, shape, _ in bucket:
                count = 1
                for size in shape:
                    count *= size
                named.append((name, flat[offset:offset + count].view(shape)))
                offset += count
            self.engine.load_weights(named)
            del flat, named
            release_freed_host_memory(self.device)     # as on the policy side: one bucket resident, not all

    def state_dict(self) -> dict:
        """The rollout model's weights on CPU (for checks; the sync never needs it)."""
        return {name: tensor.detach().cpu().clone() for name, tensor in self.engine.model.state_dict().items()}
