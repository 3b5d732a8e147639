"""All role groups of a PPO run, placed and started together, with the coarse operations the driver calls:
generate, score (reference, reward, value and old log-probs concurrently), train (policy and value concurrently),
sync weights, save, load, export. Big tensors go into the object store once and every actor reads them."""
from __future__ import annotations

from dataclasses import dataclass

import ray
from ray.exceptions import RayTaskError

import torch

from rlhf.experience import Experience
from rlhf.generation import SamplingParams

from .group import ActorGroup, connect_groups
from .placement import create_placement_groups, remove_groups
from .policy import PolicyWorker
from .reference import ReferenceWorker
from .reward import RewardWorker
from .rollout import RolloutWorker
from .trainable import reduce_train_stats
from .value import ValueWorker
from .weight_sync import sync_policy_to_rollout


class RoleError(RuntimeError):
    """A failure inside a role actor, reduced to its one-line cause."""


def unwrap(error: RayTaskError) -> Exception:
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else RoleError(str(error).strip().splitlines()[-1])


def gather(futures):
    """ray.get that surfaces the worker's own exception (e.g. a RewardFunctionError) instead of a wrapper."""
    try:
        return ray.get(futures)
    except RayTaskError as error:
        raise unwrap(error) from None


@dataclass
class ModelPaths:
    policy: str
    reference: str
    value: str | None
    tokenizer: str


class RoleSet:
    def __init__(self, cfg, paths: ModelPaths, placement_timeout_s: float = 120.0):
        self.cfg, self.paths = cfg, paths
        roles = cfg.active_roles()
        self.placements = create_placement_groups(cfg.actors, roles, placement_timeout_s)
        config = cfg.model_dump(mode="json")
        frozen_distributed = cfg.deepspeed.frozen_zero_stage == 3
        make = lambda cls, role, distributed: ActorGroup(cls, role, getattr(cfg.actors, role),
                                                        self.placements[role], config, distributed, connect=False)
        self.policy = make(PolicyWorker, "policy", True)
        self.value = make(ValueWorker, "value", True) if cfg.uses_critic else None
        self.reference = make(ReferenceWorker, "reference", frozen_distributed)
        self.reward = make(RewardWorker, "reward", frozen_distributed and cfg.reward.model is not None)
        self.rollout = make(RolloutWorker, "rollout", False)
        connect_groups(list(self.groups().values()))
        setups = (self.policy.call("setup", paths.policy) + self.reference.call("setup", paths.reference)
                  + self.reward.call("setup", paths.tokenizer) + self.rollout.call("setup", paths.policy, paths.tokenizer))
        if self.value is not None:
            setups += self.value.call("setup", paths.value)
        gather(setups)

    def groups(self) -> dict:
        named = {"policy": self.policy, "value": self.value, "reference": self.reference, "reward": self.reward,
                 "rollout": self.rollout}
        return {name: group for name, group in named.items() if group is not None}

    # ---- one PPO step ----------------------------------------------------------------------------------------

    def generate(self, prompt_ids, prompt_mask, prompt_index, params: SamplingParams, seed: int) -> Experience:
        parts = gather(self.rollout.call("generate", prompt_ids, prompt_mask, prompt_index, params, seed))
        return Experience.concat(parts)

    def score(self, exp: Experience) -> Experience:
        """Old log-probs (policy), reference log-probs, rewards and values, all roles at once on one shared object."""
        ref = ray.put(exp)
        futures = {"old_logprobs": self.policy.call("logprobs", ref),
                   "reference_logprobs": self.reference.call("logprobs", ref),
                   "scores": self.reward.call("scores", ref)}
        if self.value is not None:
            futures["values"] = self.value.call("values", ref)
        names = list(futures)
        results = gather([f for name in names for f in futures[name]])
        columns, start = {}, 0
        for name in names:
            count = len(futures[name])
            columns[name] = torch.cat(results[start:start + count])   # shards in rank order
            start += count
        return exp.replace(**columns)

    def train(self, exp: Experience, plan: list, kl_coef: float, ptx=None) -> dict:
        """Policy and value updates run concurrently on the same experience object."""
        ref = ray.put(exp)
        policy_futures = self.policy.call("train", ref, plan, kl_coef, ptx)
        value_futures = self.value.call("train", ref, plan) if self.value is not None else []
        results = gather(policy_futures + value_futures)
        stats = reduce_train_stats(results[:len(policy_futures)], "policy")
        if value_futures:
            stats.update(reduce_train_stats(results[len(policy_futures):], "value"))
        return stats

    def sync_weights(self) -> float:
        try:
            return sync_policy_to_rollout(self.policy, self.rollout)
        except RayTaskError as error:
            raise unwrap(error) from None

    # ---- checkpoints and export --------------------------------------------------------------------------------

    def trainable(self) -> dict:
        return {name: group for name, group in (("policy", self.policy), ("value", self.value)) if group is not None}

    def save(self, folder) -> None:
        gather([f for name, group in self.trainable().items() for f in group.call("save_checkpoint", f"{folder}/{name}")])

    def load(self, folder) -> None:
        gather([f for name, group in self.trainable().items() for f in group.call("load_checkpoint", f"{folder}/{name}")])

    def export_policy(self, folder) -> None:
        gather(self.policy.call("export_hf", str(folder), self.paths.tokenizer))

    def peak_memory(self) -> dict:
        out = {}
        for name, group in self.groups().items():
            for rank, stats in enumerate(gather(group.call("peak_memory_mb"))):
                out[f"{name}[{rank}]"] = stats
        return out

    def shutdown(self) -> None:
        for group in self.groups().values():
            group.shutdown()
        remove_groups(self.placements)
