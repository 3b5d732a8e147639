"""Shared machinery of frozen roles (reference, reward model): a plain replica or a ZeRO-3 inference engine."""
from __future__ import annotations

import torch

from rlhf.deepspeed_config import inference_config
from rlhf.experience import Experience

from .base import RoleWorker

FORWARD_BATCH = 16


class FrozenWorker(RoleWorker):
    def wrap(self, model: torch.nn.Module) -> None:
        if self.cfg.deepspeed.frozen_zero_stage == 3:
            import deepspeed

            config = inference_config(3, self.dtype_name, self.world_size)
            self.model, *_ = deepspeed.initialize(model=model, config=config, dist_init_required=False)
        else:
            self.model = model.to(self.device)
        self.model.eval()

    def model_outputs(self, exp: Experience):
        return self.model(input_ids=exp.sequences.to(self.device), attention_mask=exp.attention_mask.to(self.device),
                          position_ids=exp.position_ids.to(self.device))

    def forward_shard(self, exp: Experience, fn) -> torch.Tensor:
        return self.map_shard(exp, FORWARD_BATCH, fn)
