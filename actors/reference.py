"""The reference role: the frozen KL anchor (the SFT model in InstructGPT), as a plain replica per actor or a
ZeRO-3 inference engine sharded over the role's actors."""
from __future__ import annotations

import torch

from rlhf.algo.logprobs import logprobs_from_logits, response_slice
from rlhf.experience import Experience
from rlhf.models import load_causal_lm

from .frozen import FrozenWorker


class ReferenceWorker(FrozenWorker):
    def setup(self, model_path: str) -> None:
        self.wrap(load_causal_lm(model_path, self.dtype))

    def logprobs(self, exp: Experience) -> torch.Tensor:
        T = self.cfg.rollout.temperature

        def fn(micro: Experience):
            logits = response_slice(self.model_outputs(micro).logits, micro.prompt_length, micro.response_length)
            return logprobs_from_logits(logits, micro.responses.to(self.device), T)

        return self.forward_shard(exp, fn)
