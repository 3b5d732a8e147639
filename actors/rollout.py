"""The rollout role: full policy weights in an inference replica and a rollout engine that samples responses."""
from __future__ import annotations

import torch

from rlhf.experience import Experience
from rlhf.generation import ENGINES, SamplingParams
from rlhf.models import load_causal_lm, load_tokenizer
from rlhf.seeding import derive_seed

from .base import RoleWorker
from .memory import releasing_between
from .weight_sync import DTYPES, SyncGroup, bucket_numel, decode, join_store


class RolloutWorker(RoleWorker):
    def setup(self, model_path: str, tokenizer_path: str) -> None:
        model = load_causal_lm(model_path, self.dtype, self.attention).to(self.device)
        self.engine = ENGINES[self.cfg.rollout.engine](model, load_tokenizer(tokenizer_path), self.device)

    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_index: torch.Tensor,
                 params: SamplingParams, purpose: str, step: int) -> Experience:
        """Sample the prompts this actor was given, seeded by the stream (purpose, step, rank)."""
        return self.engine.generate(prompt_ids, prompt_mask, prompt_index, params,
                                    derive_seed(self.cfg.run.seed, purpose, step, self.rank))

    def generate_pieces(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_index: torch.Tensor,
                        params: SamplingParams, purpose: str, step: int, cuts: list[int]) -> tuple:
        """`generate`, returned as separate objects (called with num_returns = len(cuts)): the samples without
        token ids for the driver, then the samples cut at `cuts` (row boundaries within this actor's samples, from
        0 to its row count), one object per piece, each read only by the consumers whose block it is part of."""
        self.use_threads("generate")
        exp = self.generate(prompt_ids, prompt_mask, prompt_index, params, purpose, step)
        return (exp.without_tokens(), *[exp.select(slice(a, b)) for a, b in zip(cuts, cuts[1:])])

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
        for bucket in releasing_between(plan, self.device):     # as on the policy side
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

    def state_dict(self) -> dict:
        """The rollout model's weights on CPU (for checks; the sync never needs it)."""
        return {name: tensor.detach().cpu().clone() for name, tensor in self.engine.model.state_dict().items()}
