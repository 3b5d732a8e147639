"""Weight sync from the policy to the rollout actors, one module with one job: the policy's rank 0 puts its full
(ZeRO-3-gathered) state dict in the Ray object store once as numpy arrays (3-6x faster than torch tensors there);
every rollout actor reads the same object. bf16 travels as int16 bits (numpy has no bfloat16)."""
from __future__ import annotations

import time

import numpy as np
import ray
import torch


def encode(state_dict: dict) -> dict:
    out = {}
    for name, tensor in state_dict.items():
        if tensor.dtype == torch.bfloat16:
            out[name] = ("bf16", tensor.view(torch.int16).numpy())
        else:
            out[name] = (None, tensor.numpy())
    return out


def decode(encoded: dict) -> dict:
    out = {}
    for name, (tag, array) in encoded.items():
        tensor = torch.from_numpy(np.asarray(array))
        out[name] = tensor.view(torch.bfloat16) if tag == "bf16" else tensor
    return out


def publish(state_dict: dict) -> list:
    """Put once; returns [ObjectRef] (wrapped so Ray passes the reference, not the value, back to the caller)."""
    return [ray.put(encode(state_dict))]


def sync_policy_to_rollout(policy_group, rollout_group) -> float:
    """Gather on the policy (all ranks take part), load into every rollout actor; returns the seconds it took."""
    start = time.perf_counter()
    published = policy_group.run("publish_weights")[0][0]
    rollout_group.run("load_weights", published)
    del published
    return time.perf_counter() - start
