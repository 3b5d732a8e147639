"""Weight sync from the policy to the rollout actors: one module with one job, two ways (`rollout.weight_sync`),
each timed per step (`time/weight_sync`) and measured for the policy's extra peak memory
(`memory/weight_sync_extra_mb`) at its first sync, or at every one with `measure_every_sync` (`rlhf bench
--weight-sync`): on CPU the measure hands the process's freed memory back to the OS (`malloc_trim`), which the
next phase then page-faults in again (on the tiny `overhead` bench workload the sync took 10-11 ms with the
measure, 3.5 ms without), and a sync's footprint is the same at every step.

- `collective` (the way large systems do it): a torch.distributed group of its own spans the policy's rank 0 (rank
  0 of the group) and every rollout actor (ranks 1..N), NCCL on GPU and gloo on CPU. The policy walks its parameters
  bucket by bucket (`rollout.weight_sync_bucket_mb`): under ZeRO-3 every policy rank takes part in gathering one
  bucket, rank 0 flattens it into one tensor and broadcasts it, and each rollout actor copies it into its model in
  place. The policy's extra memory is one bucket (plus, under ZeRO-3, that bucket's gathered parameters), never
  the whole model.
- `object_store` (the fallback, no group to form): rank 0 gathers the full state dict and puts it once in the Ray
  object store as numpy arrays (3-6x faster than torch tensors there); every rollout actor reads the same object.
  bf16 travels as int16 bits (numpy has no bfloat16).
"""
from __future__ import annotations

import datetime
import math
import time

import numpy as np
import ray
import torch

from .group import Calls, gather, gather_all

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---- the bucket plan (pure) -----------------------------------------------------------------------------------

def bucket_plan(named_shapes: list[tuple[str, tuple, str]], bucket_mb: float) -> list[list[tuple[str, tuple, str]]]:
    """(name, shape, dtype) of every parameter, in order, grouped into buckets of at most `bucket_mb` MiB of one
    dtype each; a parameter larger than a bucket travels alone."""
    limit = bucket_mb * 2**20
    buckets: list[list] = []
    size = 0.0
    for name, shape, dtype in named_shapes:
        nbytes = math.prod(shape) * torch.empty((), dtype=DTYPES[dtype]).element_size()
        if not buckets or size + nbytes > limit or buckets[-1][0][2] != dtype:
            buckets.append([])
            size = 0.0
        buckets[-1].append((name, tuple(shape), dtype))
        size += nbytes
    return buckets


def bucket_numel(bucket) -> int:
    return sum(math.prod(shape) for _, shape, _ in bucket)


# ---- the group (inside the actors) ------------------------------------------------------------------------------

class SyncGroup:
    """A process group of its own, not the default one (the policy's rank 0 already belongs to its DeepSpeed
    group), formed over a TCP store that the policy's rank 0 hosts on a port the OS picks (so it cannot be taken)."""

    def __init__(self, store, rank: int, world_size: int, timeout_s: float, device: torch.device):
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        prefixed = dist.PrefixStore("weight_sync", store)
        if device.type == "cuda":
            self.group = dist.ProcessGroupNCCL(prefixed, rank, world_size)
        else:
            self.group = dist.ProcessGroupGloo(prefixed, rank, world_size, timeout)
        self.device = device

    def broadcast(self, tensor: torch.Tensor) -> None:
        self.group.broadcast(tensor, 0).wait()


def host_store(world_size: int, timeout_s: float):
    """A TCP store on this node on a free port; returns (store, host, port)."""
    import torch.distributed as dist

    host = ray.util.get_node_ip_address()
    store = dist.TCPStore(host, 0, world_size, is_master=True, timeout=datetime.timedelta(seconds=timeout_s),
                          wait_for_workers=False)
    return store, host, store.port


def join_store(host: str, port: int, world_size: int, timeout_s: float):
    import torch.distributed as dist

    return dist.TCPStore(host, port, world_size, is_master=False, timeout=datetime.timedelta(seconds=timeout_s))


# ---- object-store encoding --------------------------------------------------------------------------------------

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


# ---- the driver's side: one object per way, looked up by name ---------------------------------------------------

class _Sync:
    """What both ways share: the groups, and whether the coming sync measures the policy's extra peak memory."""

    def __init__(self, policy_group, rollout_group, cfg=None, measure_every_sync: bool = False):
        self.policy, self.rollout = policy_group, rollout_group
        self.measure_every_sync, self.measured = measure_every_sync, False

    def measure_now(self) -> bool:
        measure = self.measure_every_sync or not self.measured
        self.measured = True
        return measure

    @staticmethod
    def stats(start: float, extra_mb: float | None) -> dict:
        out = {"time/weight_sync": time.perf_counter() - start}
        if extra_mb is not None:
            out["memory/weight_sync_extra_mb"] = extra_mb
        return out


class ObjectStoreSync(_Sync):
    def __call__(self, after_issue=None) -> dict:
        start = time.perf_counter()
        published, extra_mb = self.policy.run("publish_weights", self.measure_now())[0]
        loading = self.rollout.call("load_weights", published[0])
        if after_issue is not None:
            after_issue()
        gather(loading)
        del published
        return self.stats(start, extra_mb)


class CollectiveSync(_Sync):
    def __init__(self, policy_group, rollout_group, cfg, measure_every_sync: bool = False):
        super().__init__(policy_group, rollout_group, cfg, measure_every_sync)
        timeout = cfg.rollout.weight_sync_timeout_s
        world = 1 + len(rollout_group)
        leader = policy_group.actors[0]
        host, port = gather_all(Calls("policy", "host_weight_sync", [leader.host_weight_sync.remote(world, timeout)]),
                                timeout_s=timeout)[0][0]
        gather_all(Calls("policy", "join_weight_sync", [leader.join_weight_sync.remote(world, timeout)]),
                   self.rollout.call("join_weight_sync", host, port, world, timeout), timeout_s=timeout + 30)
        self.plan = policy_group.run("weight_plan", cfg.rollout.weight_sync_bucket_mb)[0]
        self.rollout.run("check_weight_plan", self.plan)

    def __call__(self, after_issue=None) -> dict:
        """`after_issue()` runs once the calls are sent, before waiting for them: calls queued on the rollout
        actors then (a generation) run after the new weights are in."""
        start = time.perf_counter()
        calls = [self.policy.call("broadcast_weights", self.plan, self.measure_now()),
                 self.rollout.call("receive_weights", self.plan)]
        if after_issue is not None:
            after_issue()
        sent, _ = gather_all(*calls)
        return self.stats(start, sent[0])


# the table the config's `rollout.weight_sync` choices come from
METHODS = {"collective": CollectiveSync, "object_store": ObjectStoreSync}


def sync_policy_to_rollout(policy_group, rollout_group) -> float:
    """One object-store sync (used where no group is kept, e.g. an evaluator); returns the seconds it took."""
    return ObjectStoreSync(policy_group, rollout_group)()["time/weight_sync"]
