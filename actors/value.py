"""The value (critic) role: a scalar-head model under DeepSpeed ZeRO giving V(s_t) for every response token,
trained with the clipped value loss."""
from __future__ import annotations

import torch

from rlhf.experience import Experience
from rlhf.forward import response_values, value_objective
from rlhf.models import load_scalar_model

from .base import in_phase
from .trainable import TrainableWorker


class ValueWorker(TrainableWorker):
    def setup(self, model_path: str) -> None:
        self.build_engine(lambda: load_scalar_model(model_path, self.dtype, self.attention), "value")

    def _values(self, exp: Experience) -> torch.Tensor:
        return response_values(self.runner, exp, self.device)

    @in_phase("score")
    def values(self, pieces: list) -> torch.Tensor:
        return self.forward_batches(self.rows(pieces), self._values)

    @in_phase("train")
    def train(self, pieces: list, scored: dict, plan: list) -> dict:
        """Value epochs over the minibatches of `plan` on this rank's block (its pieces plus `scored`)."""
        ppo = self.cfg.ppo
        exp = self.rows(pieces).replace(**scored)

        def micro_loss(micro: Experience, global_tokens: float, update: int, micro_index: int):
            return value_objective(self._values(micro), micro, ppo, global_tokens, self.device)

        return self.run_updates(exp, plan, micro_loss)
