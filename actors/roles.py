"""The coarse operations of a PPO run on its role groups: generate, score (reference, reward, value and old
log-probs concurrently), train (policy and value concurrently), sync weights, save, load, export. Big tensors go
into the object store once and every actor reads them."""
from __future__ import annotations

from dataclasses import dataclass

import ray
import torch

from rlhf.experience import Experience
from rlhf.generation import SamplingParams

from .group import RoleGroups, RoleSpec, gather, gather_all
from .policy import PolicyWorker
from .reference import ReferenceWorker
from .reward import RewardWorker
from .rollout import RolloutWorker
from .trainable import reduce_train_stats
from .value import ValueWorker
from .weight_sync import METHODS as WEIGHT_SYNC_METHODS


@dataclass
class ModelPaths:
    policy: str
    reference: str | None      # None: the policy actors compute the reference log-probs (LoRA, adapters off)
    value: str | None
    tokenizer: str


def ppo_role_specs(cfg, paths: ModelPaths) -> list[RoleSpec]:
    frozen_distributed = cfg.deepspeed.frozen_zero_stage == 3
    specs = [RoleSpec("policy", PolicyWorker, (paths.policy,), distributed=True)]
    if paths.reference is not None:
        specs.append(RoleSpec("reference", ReferenceWorker, (paths.reference,), distributed=frozen_distributed))
    specs += [RoleSpec("reward", RewardWorker, (paths.tokenizer,),
                      distributed=frozen_distributed and cfg.reward.model is not None),
             RoleSpec("rollout", RolloutWorker, (paths.policy, paths.tokenizer))]
    if cfg.uses_critic:
        specs.append(RoleSpec("value", ValueWorker, (paths.value,), distributed=True))
    return specs


class RoleSet:
    def __init__(self, cfg, paths: ModelPaths):
        self.cfg, self.paths = cfg, paths
        self.groups = RoleGroups(cfg, ppo_role_specs(cfg, paths))
        self.policy, self.value = self.groups["policy"], self.groups.get("value")
        self.reward, self.rollout = self.groups["reward"], self.groups["rollout"]
        # without reference actors the policy actors score the reference too, with their adapters off
        self.reference = self.groups.get("reference")
        try:
            self.weight_sync = WEIGHT_SYNC_METHODS[cfg.rollout.weight_sync](self.policy, self.rollout, cfg)
        except BaseException:
            self.groups.shutdown()
            raise

    # ---- one PPO step ----------------------------------------------------------------------------------------

    def generate(self, prompt_ids, prompt_mask, prompt_index, params: SamplingParams, step: int) -> Experience:
        """Each rollout actor samples its share of the prompts (seeded by step and rank)."""
        parts = gather(self.rollout.call("generate", prompt_ids, prompt_mask, prompt_index, params, "sampling", step))
        return Experience.concat(parts)

    def score(self, exp: Experience) -> Experience:
        """Old log-probs (policy), reference log-probs, rewards and values, all roles at once on one shared object."""
        ref = ray.put(exp)
        calls = {"old_logprobs": self.policy.call("logprobs", ref),
                 "reference_logprobs": (self.reference.call("logprobs", ref) if self.reference is not None
                                        else self.policy.call("reference_logprobs", ref)),
                 "scores": self.reward.call("scores", ref)}
        if self.value is not None:
            calls["values"] = self.value.call("values", ref)
        results = gather_all(*calls.values())
        return exp.replace(**{name: torch.cat(shards) for name, shards in zip(calls, results)})  # rank order

    def train(self, exp: Experience, plan: list, kl_coef: float, ptx=None) -> dict:
        """Policy and value updates run concurrently on the same experience object."""
        ref = ray.put(exp)
        calls = [self.policy.call("train", ref, plan, kl_coef, ptx)]
        if self.value is not None:
            calls.append(self.value.call("train", ref, plan))
        results = gather_all(*calls)
        stats = reduce_train_stats(results[0], "policy")
        if self.value is not None:
            stats.update(reduce_train_stats(results[1], "value"))
        return stats

    def sync_weights(self) -> dict:
        """New policy weights into every rollout actor; returns `time/weight_sync` and the policy's extra memory."""
        return self.weight_sync()

    # ---- checkpoints and export --------------------------------------------------------------------------------

    def trainable(self) -> dict:
        return {name: group for name, group in (("policy", self.policy), ("value", self.value)) if group is not None}

    def save(self, folder) -> None:
        gather_all(*[group.call("save_checkpoint", f"{folder}/{name}") for name, group in self.trainable().items()])

    def load(self, folder) -> None:
        gather_all(*[group.call("load_checkpoint", f"{folder}/{name}") for name, group in self.trainable().items()])

    def export_policy(self, folder, adapter_folder) -> None:
        """The policy in HF format into `folder`; with LoRA that is the merged model, and the adapter goes to
        `adapter_folder` (on top of the initial policy)."""
        self.policy.run("export_hf", str(folder), self.paths.tokenizer, str(adapter_folder), self.paths.policy)

    def peak_memory(self) -> dict:
        out = {}
        for name, group in self.groups.groups.items():
            for rank, stats in enumerate(group.run("peak_memory_mb")):
                out[f"{name}[{rank}]"] = stats
        return out

    def shutdown(self) -> None:
        self.groups.shutdown()
