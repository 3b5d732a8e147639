"""Scores a policy by sampling on held-out prompts with rollout actors and scoring with reward actors (a reward
model, a reward function, or a hidden ground truth given as a function)."""
from __future__ import annotations

import torch

from rlhf.generation import SamplingParams

from .group import ActorGroup
from .placement import create_placement_groups, remove_groups
from .reward import RewardWorker
from .roles import gather
from .rollout import RolloutWorker
from .weight_sync import sync_policy_to_rollout


class PolicyEvaluator:
    def __init__(self, cfg, policy_path: str, tokenizer_path: str):
        """`cfg.reward` says how to score; one rollout and one reward actor (their roles' resources)."""
        self.cfg, self.tokenizer_path = cfg, tokenizer_path
        one = {"num_actors": 1, "colocate_with": None}
        actors = cfg.actors.model_copy(update={r: getattr(cfg.actors, r).model_copy(update=one)
                                               for r in ("rollout", "reward")})
        self.placements = create_placement_groups(actors, ["rollout", "reward"])
        config = cfg.model_copy(update={"actors": actors}).model_dump(mode="json")
        self.rollout = ActorGroup(RolloutWorker, "rollout", actors.rollout, self.placements["rollout"], config, False)
        self.reward = ActorGroup(RewardWorker, "reward", actors.reward, self.placements["reward"], config, False)
        gather(self.rollout.call("setup", policy_path, tokenizer_path) + self.reward.call("setup", tokenizer_path))

    def load_path(self, policy_path: str) -> None:
        gather(self.rollout.call("setup", policy_path, self.tokenizer_path))

    def load_from(self, trainable_group) -> None:
        sync_policy_to_rollout(trainable_group, self.rollout)

    def mean_score(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, seed: int) -> tuple[float, list]:
        """Mean score of one sampled response per prompt (rollout temperature / top-p / top-k), and the samples."""
        r = self.cfg.rollout
        params = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, r.top_k, 1)
        exp = gather(self.rollout.call("generate", prompt_ids, prompt_mask, torch.arange(len(prompt_ids)),
                                       params, seed))[0]
        scores = gather(self.reward.call("scores", exp))[0]
        return scores.mean().item(), exp

    def shutdown(self) -> None:
        self.rollout.shutdown()
        self.reward.shutdown()
        remove_groups(self.placements)
