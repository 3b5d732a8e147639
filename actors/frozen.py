"""Shared machinery of frozen roles (reference, reward model): a plain replica or a ZeRO-3 inference engine."""
from __future__ import annotations

from typing import Callable

import torch

from rlhf.deepspeed_config import inference_config
from rlhf.experience import Experience

from .base import RoleWorker
from .loading import build_model


class FrozenWorker(RoleWorker):
    def wrap(self, load: Callable[[], torch.nn.Module]) -> None:
        """The model from `load()`: under ZeRO-3 built partitioned over the role's ranks and run by an inference
        engine, otherwise a whole replica on this actor's device."""
        if self.cfg.deepspeed.frozen_zero_stage == 3:
            import deepspeed

            config = inference_config(3, self.dtype_name, self.world_size)
            self.runner, *_ = deepspeed.initialize(model=build_model(load, config), config=config,
                                                  dist_init_required=False)
        else:
            self.runner = load().to(self.device)
        self.runner.eval()                            # (a DeepSpeed engine's `eval` returns None)
        self.runner.requires_grad_(False)             # never trained: no gradient is ever allocated for it

    def forward_shard(self, exp: Experience, fn) -> torch.Tensor:
        return self.map_shard(exp, self.cfg.deepspeed.frozen_micro_batch_size, fn)
