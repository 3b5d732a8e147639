"""The one place that builds a DeepSpeed config dict (pure; DeepSpeed itself is imported only by the actors)."""
from __future__ import annotations

BUCKET_ELEMENTS = int(5e7)


def trainable_config(settings, world_size: int, dtype: str) -> dict:
    """ZeRO config of a trainable engine from its `EngineSettings` (minibatch size global, over all ranks).

    Gradient accumulation covers the minibatch: micro x accumulation x world = minibatch.
    """
    micro, zero_settings = settings.micro_batch_size, settings.zero
    accumulation = settings.minibatch_size // (micro * world_size)
    # DeepSpeed's default gradient-reduction and all-gather buckets are 5e8 elements: a 2 GB fp32 buffer per rank
    # whatever the model, more than a 135M model's own share. 5e7 keeps the traffic in large pieces at a tenth.
    zero: dict = {"stage": zero_settings.zero_stage, "reduce_bucket_size": BUCKET_ELEMENTS,
                  "allgather_bucket_size": BUCKET_ELEMENTS}
    if zero_settings.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if zero_settings.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    if zero_settings.zero_stage == 3:
        # gather small models whole; keeps CPU runs from fragmenting into many tiny collectives
        zero.update({"stage3_param_persistence_threshold": 0, "stage3_prefetch_bucket_size": BUCKET_ELEMENTS})
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * world_size,
        "gradient_clipping": settings.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bf16"},
        # we pass a torch optimizer: no C++ op build; required for offload with a client optimizer
        "zero_force_ds_cpu_optimizer": False,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def inference_config(zero_stage: int, dtype: str, world_size: int) -> dict:
    """ZeRO-3 inference engine for a frozen role (parameters sharded over its actors, gathered per layer)."""
    return {
        "train_micro_batch_size_per_gpu": 1,
        "train_batch_size": world_size,
        "zero_optimization": {"stage": zero_stage, "stage3_param_persistence_threshold": 0},
        "bf16": {"enabled": dtype == "bf16"},
        "steps_per_print": 10**9,
    }
