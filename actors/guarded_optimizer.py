"""AdamW and its LR schedule with a numerical-fault guard: an update whose loss or gradients are not finite on any
rank of the role's group is skipped on every rank (no parameter, moment or step-count change; the schedule does
not advance), so data-parallel replicas and ZeRO partitions never diverge. The decision is one all-reduce per
update, inside the step DeepSpeed calls, after its gradient reduction and clipping."""
from __future__ import annotations

import torch
import torch.distributed as dist


class GuardedAdamW(torch.optim.AdamW):
    """`begin_update(loss_finite)` before the engine's optimizer step arms the guard; the first `step` call of that
    update decides for all ranks (ZeRO-3 calls `step` once per parameter sub-group: one decision for them all).
    After the engine's step, `skipped` says whether this update was dropped."""

    def __init__(self, params, device: torch.device, **kwargs):
        super().__init__(params, **kwargs)
        self.flag_device = device           # NCCL reduces device tensors; gloo CPU ones
        self.loss_bad = False
        self.decision: bool | None = None

    def begin_update(self, loss_finite: bool) -> None:
        self.loss_bad, self.decision = not loss_finite, None

    @property
    def skipped(self) -> bool:
        return bool(self.decision)

    def _local_fault(self) -> bool:
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if self.loss_bad:
            return True
        return bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    @torch.no_grad()
    def step(self, closure=None):
        if self.decision is None:
            flag = torch.tensor([float(self._local_fault())], device=self.flag_device)
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.decision = bool(flag.item())
        if self.decision:
            return None
        return super().step(closure)


class GuardedLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR that does not advance on an update its `GuardedAdamW` skipped."""

    def step(self, epoch=None):
        if getattr(self.optimizer, "skipped", False):
            return
        super().step(epoch)
