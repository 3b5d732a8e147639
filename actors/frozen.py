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
        """`fn` over this rank's shard in fixed-size chunks (equal counts on all ranks, as ZeRO-3 requires)."""
        shard = exp.shard(self.rank, self.world_size)
        with torch.no_grad():
            return torch.cat([fn(shard.select(slice(i, i + FORWARD_BATCH))).float().cpu()
                              for i in range(0, len(shard), FORWARD_BATCH)])
