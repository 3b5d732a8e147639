"""The value (critic) role: a scalar-head model under DeepSpeed ZeRO giving V(s_t) for every response token,
trained with the clipped value loss."""
from __future__ import annotations

import torch

from rlhf.algo.logprobs import response_slice
from rlhf.algo.losses import value_loss
from rlhf.experience import Experience
from rlhf.models import load_scalar_model

from .trainable import TrainableWorker


class ValueWorker(TrainableWorker):
    def setup(self, model_path: str) -> None:
        self.build_engine(lambda: load_scalar_model(model_path, self.dtype), "value")

    def _values(self, exp: Experience) -> torch.Tensor:
        out = self.model_outputs(exp).logits[..., 0]
        return response_slice(out, exp.prompt_length, exp.response_length).float()

    def values(self, exp: Experience) -> torch.Tensor:
        return self.forward_batches(exp, self._values)

    def train(self, exp: Experience, plan: list) -> dict:
        ppo = self.cfg.ppo

        def micro_loss(micro: Experience, global_tokens: float, update: int, micro_index: int):
            values = self._values(micro)
            loss, stats = value_loss(values, micro.values.to(self.device), micro.returns.to(self.device),
                                     micro.response_mask.to(self.device), ppo.value_clip_eps, global_tokens)
            stats["value/loss"] = loss.detach()
            return ppo.value_coef * loss, stats

        return self.run_updates(exp, plan, micro_loss)
