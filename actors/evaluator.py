"""Scores a policy by sampling on held-out prompts with a rollout actor and scoring with a reward actor (a reward
model, a reward function, or a hidden ground truth given as a function)."""
from __future__ import annotations

import functools

import torch

from rlhf.data.prompts import left_pad
from rlhf.experience import Experience
from rlhf.generation import SamplingParams, response_texts
from rlhf.models import load_tokenizer
from rlhf.placement_rules import PHASE_ROLES

from .group import RoleGroups, RoleSpec, gather
from .reward import RewardWorker
from .rollout import RolloutWorker
from .weight_sync import sync_policy_to_rollout


class PolicyEvaluator:
    def __init__(self, cfg, policy_path: str, tokenizer_path: str, scores: bool = True):
        """`cfg.reward` says how to score; one rollout and (with `scores`) one reward actor (their roles'
        resources)."""
        self.cfg, self.tokenizer_path = cfg, tokenizer_path
        one = lambda role: getattr(cfg.actors, role).model_copy(update={"num_actors": 1, "colocate_with": None})
        specs = [RoleSpec("rollout", RolloutWorker, (policy_path, tokenizer_path), resources=one("rollout"))]
        if scores:
            specs.append(RoleSpec("reward", RewardWorker, (tokenizer_path,), resources=one("reward")))
        self.groups = RoleGroups(cfg, specs)
        self.groups.apply_phase_threads(PHASE_ROLES)         # generation and scoring take turns
        self.rollout = self.groups["rollout"]
        self.reward = self.groups["reward"] if scores else None

    @functools.cached_property
    def tokenizer(self):
        """Loaded once: FSBS samples and scores through it every round."""
        return load_tokenizer(self.tokenizer_path)

    def load_path(self, policy_path: str) -> None:
        self.rollout.run("setup", policy_path, self.tokenizer_path)

    def load_from(self, trainable_group) -> None:
        sync_policy_to_rollout(trainable_group, self.rollout)

    def mean_score(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, step: int) -> tuple[float, object]:
        """Mean score of one sampled response per prompt (rollout temperature / top-p / top-k), and the samples;
        sampling is seeded by the 'evaluation' stream at `step`."""
        params = SamplingParams.from_rollout(self.cfg.rollout, n_samples_per_prompt=1)
        exp = gather(self.rollout.call("generate", prompt_ids, prompt_mask, torch.arange(len(prompt_ids)),
                                       params, "evaluation", step))[0]
        scores = torch.cat(self.reward.run_shards("scores", exp))
        return scores.mean().item(), exp

    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, n: int, step: int):
        """`n` responses per prompt (rollout temperature / top-p / top-k), seeded by the 'evaluation' stream at
        `step`; an Experience with the n samples of a prompt adjacent."""
        params = SamplingParams.from_rollout(self.cfg.rollout, n_samples_per_prompt=n)
        return gather(self.rollout.call("generate", prompt_ids, prompt_mask, torch.arange(len(prompt_ids)),
                                        params, "evaluation", step))[0]

    def complete(self, texts: list[str], n: int, step: int, chunk: int = 64) -> list[list[str]]:
        """`n` sampled continuations of each text (a prompt, or a prompt and a forced start), as text."""
        tokenizer = self.tokenizer
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        out: list[str] = []
        for start in range(0, len(ids), chunk):
            prompt_ids, prompt_mask = left_pad(ids[start:start + chunk], tokenizer.pad_token_id)
            out += response_texts(self.sample(prompt_ids, prompt_mask, n, step + start), tokenizer)
        return [out[i * n:(i + 1) * n] for i in range(len(texts))]

    def score_texts(self, prompts: list[str], responses: list[str], chunk: int = 64) -> list[float]:
        """The reward actor's score of each (prompt, response) text pair (the response closed with EOS)."""
        tokenizer = self.tokenizer
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
        pairs = [(encode(p), encode(r) + [tokenizer.eos_token_id]) for p, r in zip(prompts, responses)]
        scores: list[float] = []
        for start in range(0, len(pairs), chunk):
            exp = Experience.from_pairs(pairs[start:start + chunk], tokenizer.pad_token_id)
            scores += torch.cat(self.reward.run_shards("scores", exp)).tolist()
        return scores

    def shutdown(self) -> None:
        self.groups.shutdown()
