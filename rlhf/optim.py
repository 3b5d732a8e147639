"""The optimizer every trainable engine gets, named once: AdamW's settings beyond the config's LR and weight decay,
and the learning-rate schedule (linear warmup, then constant or decayed). The DeepSpeed engines
(`actors/trainable.py`) and the one-process floor of `rlhf bench --floor` (`rlhf/floor.py`) both build theirs from
here."""
from __future__ import annotations

import math

ADAMW = {"betas": (0.9, 0.95), "eps": 1e-8}


def adamw_settings() -> dict:
    """`ADAMW` plus torch's fused kernel (one pass over each tensor; on CPU 7x faster than the per-tensor loop for
    SmolLM2-135M, and the kernel of choice on GPU). Every engine uses it, so runs compare across actor counts."""
    return {**ADAMW, "fused": True}


LR_SCHEDULES = ("constant", "cosine", "linear")


def lr_schedule(warmup_steps: int, schedule: str = "constant", total_steps: int = 0, min_ratio: float = 0.1):
    """LR multiplier per optimizer step (0-based, as torch's LambdaLR counts): linear from 1/warmup_steps to 1 over
    `warmup_steps`; then 1 ('constant'), or from 1 down to `min_ratio` at `total_steps` along a half cosine or a
    line, and `min_ratio` after."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr schedule {schedule!r}: not one of {', '.join(LR_SCHEDULES)}")
    if schedule != "constant" and total_steps < 1:
        raise ValueError(f"lr schedule {schedule!r} decays over the run's optimizer steps: give total_steps")

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
        return min_ratio + (1 - min_ratio) * shape

    return multiplier
