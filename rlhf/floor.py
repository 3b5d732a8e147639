"""The floor of `rlhf bench --floor`: the PPO step of `rlhf ppo` in one process with plain PyTorch and
transformers, no Ray and no DeepSpeed. The same models, tokenizer and prompts; the same sampling with KV cache
(the rollout engine `rlhf ppo` uses); the same reference, reward and value forwards (`rlhf/forward.py`, the
functions the role workers run) at the same micro-batch sizes; the same advantages and the same update (torch
AdamW with the engines' betas and epsilon, the same seeded minibatches, micro-batches and gradient clipping).
What a distributed step costs over a floor step is the system's overhead."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .algo.kl import kl_controller
from .algo.masked import RunningMoments
from .algo.ppo import compute_advantages, minibatch_plan
from .config import engine_settings
from .data.prompts import PromptStream, left_pad
from .experience import Experience
from .forward import policy_objective, response_token_stats, response_values, sequence_scores, value_objective
from .generation import ENGINES, SamplingParams, prompt_and_response_texts
from .models import (apply_cpu_matmul, attention_kernel, default_device, load_causal_lm, load_reward_normalization,
                     load_scalar_model, load_tokenizer, torch_dtype)
from .optim import adamw_settings
from .reward_function import call_reward_function, load_reward_function
from .seeding import derive_seed
from .sharding import map_rows, micro_batches


class FloorUnsupported(ValueError):
    """A config the floor does not reproduce (it would measure other work), worded as one line."""


def check_floor_config(cfg, paths: dict) -> None:
    if cfg.model.lora.enabled:
        raise FloorUnsupported("bench --floor: model.lora is enabled; the floor trains the full model")
    if cfg.data.ptx and cfg.ppo.ptx_coef > 0:
        raise FloorUnsupported("bench --floor: PPO-ptx (data.ptx) is not part of the floor's step")
    if "reference" not in paths:
        raise FloorUnsupported("bench --floor: the reference must be a model of its own (not the policy's base)")


@dataclass
class Trainable:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    micro_batch_size: int
    max_grad_norm: float

    @classmethod
    def build(cls, model, cfg, owner: str) -> "Trainable":
        """The optimizer every engine of `rlhf ppo` gets (`rlhf/optim.py`), from the role's settings."""
        s = engine_settings(cfg, owner)
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay, **adamw_settings())
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, s.lr_multiplier())
        return cls(model, optimizer, scheduler, s.micro_batch_size, s.max_grad_norm)

    def updates(self, exp: Experience, plan: list, micro_loss) -> None:
        """One optimizer step per minibatch of `plan`, accumulated over micro-batches; each micro-batch's loss is
        already divided by its minibatch's response tokens (as in the distributed run)."""
        self.model.train()
        for rows in plan:
            minibatch = exp.select(rows)
            tokens = minibatch.response_mask.sum().item()
            for micro in micro_batches(minibatch, self.micro_batch_size):
                micro_loss(micro, tokens).backward()
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)


class FloorPPO:
    """`rlhf ppo`'s step in this process. `paths`: role -> model path (`model_sources`, resolved by the caller)."""

    def __init__(self, cfg, paths: dict, prompt_ids: list[list[int]]):
        check_floor_config(cfg, paths)
        self.cfg = cfg
        self.device = default_device()
        apply_cpu_matmul(cfg.precision.cpu_matmul, self.device)
        dtype = torch_dtype(cfg.precision.dtype, self.device)
        attention = attention_kernel(cfg.precision.attention, self.device)
        torch.manual_seed(derive_seed(cfg.run.seed, "model_init"))
        self.tokenizer = load_tokenizer(paths["policy"])
        causal_lm = lambda role: load_causal_lm(paths[role], dtype, attention).to(self.device)  # noqa: E731
        scalar_model = lambda role: load_scalar_model(paths[role], dtype, attention).to(self.device)  # noqa: E731
        self.policy = Trainable.build(causal_lm("policy"), cfg, "policy")
        self.reference = causal_lm("reference").eval().requires_grad_(False)
        self.value = Trainable.build(scalar_model("value"), cfg, "value") if cfg.uses_critic else None
        self.reward_function = self.reward_model = None
        if cfg.reward.function:
            self.reward_function = load_reward_function(cfg.reward.function)
        else:
            if load_tokenizer(paths["reward"]).get_vocab() != self.tokenizer.get_vocab():
                raise FloorUnsupported("bench --floor: the reward model has a tokenizer of its own")
            self.reward_model = scalar_model("reward").eval().requires_grad_(False)
            self.reward_shift, self.reward_scale = load_reward_normalization(paths["reward"])
        self.engine = ENGINES[cfg.rollout.engine](self.policy.model, self.tokenizer, self.device)
        self.prompt_ids = prompt_ids
        self.stream = PromptStream(len(prompt_ids), cfg.run.seed, "prompt_order")
        self.sampling = SamplingParams.from_rollout(cfg.rollout)
        self.normalizer = RunningMoments()
        self.kl = kl_controller(cfg.ppo)

    def step(self, step: int) -> tuple[Experience, dict]:
        """One PPO step; returns its experience, and its reward and KL statistics with the time of each phase
        (`reward/...`, `kl/...`, `time/<phase>`, as `rlhf ppo` logs them)."""
        cfg, times = self.cfg, {}
        start = t = time.perf_counter()

        def phase(name):
            nonlocal t
            times[f"time/{name}"] = time.perf_counter() - t
            t = time.perf_counter()

        indices = self.stream.next_indices(cfg.rollout.prompts_per_step)
        ids, mask = left_pad([self.prompt_ids[i] for i in indices], self.tokenizer.pad_token_id)
        exp = self.engine.generate(ids, mask, torch.tensor(indices), self.sampling,
                                   derive_seed(cfg.run.seed, "sampling", step, 0))
        phase("generate")
        exp = self.score(exp)
        phase("score")
        exp, stats = compute_advantages(exp, cfg.ppo, cfg.reward, self.kl.value, cfg.rollout.n_samples_per_prompt,
                                        self.normalizer)
        phase("advantages")
        self.train(exp, step)
        phase("train")
        if math.isfinite(stats["kl/sequence_mean"]):
            self.kl.update(stats["kl/sequence_mean"], len(exp))
        times["time/step"] = time.perf_counter() - start
        return exp, {**stats, **times}

    @torch.no_grad()
    def score(self, exp: Experience) -> Experience:
        cfg, device = self.cfg, self.device
        temperature, chunk = cfg.rollout.temperature, cfg.model.logprobs_chunk
        self.policy.model.eval()

        def mapped(fn, size):
            return map_rows(exp, size, fn)

        frozen = cfg.deepspeed.frozen_micro_batch_size
        changes = {
            "old_logprobs": mapped(lambda m: response_token_stats(self.policy.model, m, device, temperature, chunk)[0],
                                   self.policy.micro_batch_size),
            "reference_logprobs": mapped(lambda m: response_token_stats(self.reference, m, device, temperature,
                                                                        chunk)[0], frozen),
            "scores": self.scores(exp, frozen),
        }
        if self.value is not None:
            changes["values"] = mapped(lambda m: response_values(self.value.model, m, device),
                                       self.value.micro_batch_size)
        return exp.replace(**changes)

    def scores(self, exp: Experience, micro_batch_size: int) -> torch.Tensor:
        if self.reward_function is not None:
            prompts, responses = prompt_and_response_texts(exp, self.tokenizer)
            return call_reward_function(self.reward_function, self.cfg.reward.function, prompts, responses)
        scores = map_rows(exp, micro_batch_size, lambda micro: sequence_scores(self.reward_model, micro, self.device))
        return (scores - self.reward_shift) / self.reward_scale

    def train(self, exp: Experience, step: int) -> None:
        cfg, device = self.cfg, self.device
        plan = minibatch_plan(len(exp), cfg.ppo.num_minibatches, cfg.ppo.ppo_epochs,
                              derive_seed(cfg.run.seed, "minibatches", step))

        def policy_loss(micro, tokens):
            logprobs, entropies = response_token_stats(self.policy.model, micro, device, cfg.rollout.temperature,
                                                       cfg.model.logprobs_chunk, with_entropy=True)
            return policy_objective(logprobs, entropies, micro, cfg.ppo, self.kl.value, tokens, device)[0]

        self.policy.updates(exp, plan, policy_loss)
        if self.value is not None:
            self.value.updates(exp, plan, lambda micro, tokens: value_objective(
                response_values(self.value.model, micro, device), micro, cfg.ppo, tokens, device)[0])
