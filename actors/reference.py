"""The reference role: the frozen KL anchor (the SFT model in InstructGPT), as a plain replica per actor or a
ZeRO-3 inference engine sharded over the role's actors."""
from __future__ import annotations

import torch

from rlhf.models import load_causal_lm

from .base import in_phase
from .frozen import FrozenWorker


class ReferenceWorker(FrozenWorker):
    def setup(self, model_path: str) -> None:
        self.wrap(lambda: load_causal_lm(model_path, self.dtype, self.attention))

    @in_phase("score")
    def logprobs(self, pieces: list) -> torch.Tensor:
        return self.forward_shard(self.rows(pieces), lambda micro: self.response_token_stats(micro)[0])
