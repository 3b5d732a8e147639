"""The optimizer every trainable engine gets, named once: AdamW's settings beyond the config's LR and weight decay,
and the linear warmup of the learning rate. The DeepSpeed engines (`actors/trainable.py`) and the one-process
floor of `rlhf bench --floor` (`rlhf/floor.py`) both build theirs from here."""
from __future__ import annotations

ADAMW = {"betas": (0.9, 0.95), "eps": 1e-8}


def adamw_settings() -> dict:
    """`ADAMW` plus torch's fused kernel (one pass over each tensor; on CPU 7x faster than the per-tensor loop for
    SmolLM2-135M, and the kernel of choice on GPU). Every engine uses it, so runs compare across actor counts."""
    return {**ADAMW, "fused": True}


def warmup_schedule(warmup_steps: int):
    """LR multiplier per optimizer step: linear from 1/warmup_steps to 1 over `warmup_steps`, then 1."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
