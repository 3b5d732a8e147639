"""Building a role's model the way its DeepSpeed engine will hold it. Under ZeRO-3 the model is created inside
`deepspeed.zero.Init` (through transformers' DeepSpeed integration), so each parameter is partitioned over the
role's ranks as it is made and the checkpoint is read into the partitions: no rank ever holds the whole model.
Other stages build it whole, as they will hold it."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch


@contextlib.contextmanager
def partitioned_construction(ds_config: dict):
    """While open, transformers' `from_pretrained` builds models partitioned by ZeRO-3 under `ds_config` (a no-op
    for other stages). The integration finds the config through a module-level weak reference, so the object is
    held here and the reference cleared on the way out (a later model in this process is not partitioned by it)."""
    if ds_config.get("zero_optimization", {}).get("stage") != 3:
        yield
        return
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    held = HfDeepSpeedConfig(ds_config)
    try:
        yield
    finally:
        del held
        unset_hf_deepspeed_config()


def build_model(load: Callable[[], torch.nn.Module], ds_config: dict) -> torch.nn.Module:
    """`load()` (a `rlhf.models` loader) under the construction that `ds_config`'s ZeRO stage needs."""
    with partitioned_construction(ds_config):
        return load()


def is_partitioned(model: torch.nn.Module) -> bool:
    """True when the parameters are ZeRO-3 partitions (each carries a DeepSpeed id and its full shape)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())
