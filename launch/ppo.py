"""The PPO driver. One step, as InstructGPT and "The N implementation details of RLHF with PPO" describe it:

  1. sample a batch of prompts
  2. generate responses on the rollout actors (`rollout.async`: started during the previous step, one step stale)
  3. score the same experience concurrently: old log-probs (policy), reference log-probs, rewards, values
  4. advantages in the core: KL penalty, token rewards, GAE or a critic-free estimator
  5. train the value and policy models concurrently (PPO epochs x minibatches, PPO-ptx mixed in)
  6. sync the new policy weights to the rollout actors (synchronous mode: the next generation queued behind them)
  7. update the KL controller, log metrics, checkpoint
A stop signal (SIGTERM, SIGINT) ends the run between two steps, the last one checkpointed (`launch/stopping.py`).
"""
from __future__ import annotations

import copy
import math
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from actors.roles import ModelPaths, RoleSet, TrainableRanksLost
from rlhf.algo.kl import kl_controller
from rlhf.algo.masked import RunningMoments
from rlhf.algo.ppo import compute_advantages, minibatch_plan
from rlhf.checkpoint import CheckpointManager
from rlhf.config import for_stage, model_sources
from rlhf.data.pretrain import PretrainTexts
from rlhf.data.prompts import PromptStream, left_pad, load_prompt_texts, tokenize_prompts
from rlhf.flops import throughput
from rlhf.generation import SamplingParams
from rlhf.memory_plan import check_stage_fits
from rlhf.numerics import BadStepGuard, last_good_checkpoint
from rlhf.models import load_tokenizer, resolve_model_path
from rlhf.reward_function import probe_reward_function
from rlhf.seeding import derive_seed

from .ray_session import ray_session
from .runlog import RunLog, cleaned_up_if_never_started, prepare_run_dir
from .stopping import stop_signals


@dataclass
class Prompts:
    texts: list[str]
    ids: list[list[int]]
    stream: PromptStream


def role_paths(cfg) -> dict[str, str]:
    """role -> model path of the run (`model_sources`), each checked (exists, holds a model) and named by its key."""
    return {role: resolve_model_path(source.name, cfg.model.cache_dir, cfg.model.tiny, source.key)
            for role, source in model_sources(cfg, "ppo").items()}


def resolve_paths(cfg) -> ModelPaths:
    paths = role_paths(cfg)
    policy, reference, value = paths["policy"], paths.get("reference"), paths.get("value")
    return ModelPaths(policy=policy, reference=reference, value=value, tokenizer=policy)


def load_prompts(cfg, tokenizer) -> Prompts:
    texts, source = load_prompt_texts(cfg.data.prompts, cfg.data.input_key, cfg.data.split)
    formatted, ids = tokenize_prompts(texts, tokenizer, cfg.data.max_prompt_length, source,
                                      cfg.data.apply_chat_template)
    return Prompts(formatted, ids, PromptStream(len(ids), cfg.run.seed, "prompt_order"))


class PPOTrainer:
    """Everything checked before any actor starts; then `run()` tells the story step by step."""

    def __init__(self, cfg, resume: bool = False):
        self.cfg = cfg = for_stage(cfg, "ppo")
        self.resume = resume
        check_stage_fits(cfg, "ppo")          # from the models' configs: nothing built yet, not even 'tiny'
        self.paths = resolve_paths(cfg)
        self.tokenizer = load_tokenizer(self.paths.tokenizer)
        self.prompts = load_prompts(cfg, self.tokenizer)
        self.ptx = (PretrainTexts(cfg.data.ptx, cfg.data.ptx_text_key, self.tokenizer, cfg.data.ptx_max_length,
                                  cfg.run.seed) if cfg.data.ptx and cfg.ppo.ptx_coef > 0 else None)
        if cfg.reward.function:
            sample = self.prompts.texts[:4]    # any text is a possible response: the prompts stand in for them
            probe_reward_function(cfg.reward.function, sample, sample)
        self.kl_controller = kl_controller(cfg.ppo)
        self.normalizer = RunningMoments()
        self.guard = BadStepGuard(cfg.run.max_bad_steps)
        self.checkpoints = CheckpointManager(cfg.run_dir, cfg.checkpoint.keep_last)
        self.run_dir = prepare_run_dir(cfg, resume, lambda: self.checkpoints.latest() is not None)
        self.sampling = SamplingParams.from_rollout(cfg.rollout)
        self.step = 0
        self.pending = None            # the next step's generation, sent during this one
        self.initial_state = copy.deepcopy(self.driver_state())     # what a replay with no checkpoint starts from

    # ---- the story -------------------------------------------------------------------------------------------

    def run(self) -> Path:
        with (cleaned_up_if_never_started(self.run_dir), stop_signals("ppo", self) as stop,
              ray_session(self.cfg)):
            stop.watch()                  # SIGTERM / SIGINT end the run between two steps (launch/stopping.py)
            # every checkpoint writer checks it sees the run directory before any model loads
            self.roles = RoleSet(self.cfg, self.paths, run_dir=self.run_dir)
            try:
                self.write_placement()
                if self.resume:
                    self.restore()
                self.log = RunLog(self.cfg, self.resume, self.step)
                try:
                    while self.step < self.cfg.run.num_steps:
                        stop.between_steps(self)  # after a stop signal: the last step checkpointed, then out
                        try:
                            self.ppo_step()
                        except TrainableRanksLost:
                            # the trainable roles were recreated: replay from the last complete checkpoint
                            self.restore()
                            self.log.rewind(self.step)
                    if self.cfg.checkpoint.export_hf:
                        self.roles.export_policy(self.run_dir / "policy_hf", self.run_dir / "policy_adapter")
                    self.peak_memory = self.roles.peak_memory()
                    self.phase_threads = self.roles.phase_plan
                finally:
                    self.log.close()
            finally:
                self.write_placement()                      # where the ranks ended, after any recovery
                self.roles.shutdown()
        return self.run_dir

    def write_placement(self) -> None:
        (self.run_dir / "placement.json").write_text(json.dumps(self.roles.placement(), indent=1))

    def ppo_step(self) -> None:
        cfg, self.step = self.cfg, self.step + 1
        timings, start = {}, time.perf_counter()

        def phase(name, began):
            timings[f"time/{name}"] = time.perf_counter() - began
            return time.perf_counter()

        # 1-2. A batch of prompts (seeded order, restorable position) and n responses per prompt from the rollout
        #      actors. It was sent during the previous step: right behind that step's new weights (synchronous
        #      mode), or (async mode) with the weights before that step's update, the next step's starting now to
        #      run while this one trains. The samples' token ids stay in the object store; the driver holds the rest.
        pending, self.pending = self.pending or self.start_generation(self.step), None
        t = time.perf_counter()
        rollout = self.roles.finish_generate(pending)
        # synchronous: generation's whole time, from when it was sent; async: the wait for it
        timings["time/generate"] = time.perf_counter() - (t if cfg.rollout.async_ else min(t, pending.started))
        t = time.perf_counter()
        if cfg.rollout.async_:
            self.send_next_generation()

        # 3. Score the samples: policy, reference, reward and value actors at the same time, each rank its block.
        experience = self.roles.score(rollout)
        t = phase("score", t)

        # 4. Advantages: scores -> KL-penalized token rewards -> GAE (or GRPO / RLOO / REINFORCE++).
        experience, stats = compute_advantages(experience, cfg.ppo, cfg.reward, self.kl_controller.value,
                                               cfg.rollout.n_samples_per_prompt, self.normalizer)
        t = phase("advantages", t)

        # 5. Train value and policy concurrently over the same minibatches.
        plan = minibatch_plan(len(experience), cfg.ppo.num_minibatches, cfg.ppo.ppo_epochs,
                              derive_seed(cfg.run.seed, "minibatches", self.step))
        ptx = self.ptx_blocks(len(plan))
        train_stats, skipped = self.roles.train(rollout, experience, plan, self.kl_controller.value, ptx)
        stats.update(train_stats)
        t = phase("train", t)
        for role, flags in skipped.items():     # updates with a non-finite loss or gradient norm were skipped
            self.guard.observe(role, flags, self.step, last_good_checkpoint(self.checkpoints.latest(), "ppo"))

        # 6. New policy weights to the rollout actors; in synchronous mode the next step's generation is sent right
        #    behind them (the rollout actors run it with the new weights while the driver logs this step).
        stats.update(self.roles.sync_weights(after_issue=None if cfg.rollout.async_ else self.send_next_generation))
        t = time.perf_counter()

        # 7. KL controller, metrics, checkpoint.
        if math.isfinite(stats["kl/sequence_mean"]):
            self.kl_controller.update(stats["kl/sequence_mean"], len(experience))
        stats["run/recoveries"] = self.roles.recoveries       # lost actors recreated in place so far
        timings["time/step"] = time.perf_counter() - start
        stats.update(timings)
        stats.update(throughput(experience, timings, self.real_tokens(experience)))
        self.log.log(self.step, stats, self.samples(rollout, experience))
        at_end = self.step == cfg.run.num_steps and cfg.checkpoint.save_at_end
        if (at_end or (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0)) and self.guard.clean:
            self.save()       # not inside a streak of skipped updates: the last checkpoint stays a good one

    # ---- helpers ---------------------------------------------------------------------------------------------

    def send_next_generation(self) -> None:
        """Draw the next step's prompts and send its generation (none after the last step); a checkpoint taken
        meanwhile records the prompt stream from before this draw, so a resume draws the same prompts again."""
        if self.step < self.cfg.run.num_steps and self.pending is None:
            self.prompts_before_pending = self.prompts.stream.state_dict()
            self.pending = self.start_generation(self.step + 1)

    def start_generation(self, step: int):
        """Draw step `step`'s prompts and start their generation on the rollout actors."""
        indices = self.prompts.stream.next_indices(self.cfg.rollout.prompts_per_step)
        prompt_ids, prompt_mask = left_pad([self.prompts.ids[i] for i in indices], self.tokenizer.pad_token_id)
        return self.roles.start_generate(prompt_ids, prompt_mask, torch.tensor(indices), self.sampling, step)

    def ptx_blocks(self, updates: int):
        if self.ptx is None:
            return None
        ids, mask = self.ptx.next_batch(updates * self.cfg.data.ptx_batch_size)
        return ids.view(updates, self.cfg.data.ptx_batch_size, -1), mask.view(updates, self.cfg.data.ptx_batch_size, -1)

    def real_tokens(self, experience) -> int:
        """Prompt and response tokens of the step's samples (the driver holds no token ids: prompt lengths are
        known from the dataset)."""
        prompts = sum(len(self.prompts.ids[int(i)]) for i in experience.prompt_index)
        return prompts + int(experience.response_mask.sum().item())

    def samples(self, rollout, experience) -> list[dict] | None:
        count = self.cfg.logging.num_sample_generations
        if count == 0 or (self.step - 1) % self.cfg.logging.samples_every:
            return None
        stride = max(1, len(experience) // count)          # spread over prompts (samples of one prompt are adjacent)
        indices = list(range(0, min(count * stride, len(experience)), stride))
        logged = self.roles.sample_rows(rollout, indices)   # only these rows' token ids come to the driver
        rows = []
        for j, i in enumerate(indices):
            response = logged.responses[j][logged.response_mask[j].bool()]
            rows.append({"prompt": self.prompts.texts[int(experience.prompt_index[i])],
                         "response": self.tokenizer.decode(response, skip_special_tokens=True),
                         "score": float(experience.scores[i])})
        return rows

    def driver_state(self) -> dict:
        # a generation started for the next step has drawn its prompts: a resume draws them again
        prompts = self.prompts_before_pending if self.pending is not None else self.prompts.stream.state_dict()
        state = {"step": self.step, "kl_controller": self.kl_controller.state_dict(), "guard": self.guard.state_dict(),
                 "normalizer": self.normalizer.state_dict(), "prompts": prompts}
        if self.ptx is not None:
            state["ptx"] = self.ptx.stream.state_dict()
        return state

    @property
    def total_steps(self) -> int:
        return self.cfg.run.num_steps

    def save(self) -> None:
        folder = self.checkpoints.begin(self.step)
        self.roles.save(folder)
        self.checkpoints.commit(folder, self.step, self.driver_state())

    def restore(self) -> None:
        """The last complete checkpoint (or, with none, the start: the trainable roles then hold their initial
        weights), then the rollout actors get the policy's weights."""
        self.pending = None            # started with weights the replay does not have
        latest = self.checkpoints.latest()
        if latest is None:
            state = copy.deepcopy(self.initial_state)
        else:
            state = CheckpointManager.driver_state(latest)
            self.roles.load(latest)
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.normalizer.load_state_dict(state["normalizer"])
        if "guard" in state:
            self.guard.load_state_dict(state["guard"])
        self.prompts.stream.load_state_dict(state["prompts"])
        if self.ptx is not None and "ptx" in state:
            self.ptx.stream.load_state_dict(state["ptx"])
        self.step = state["step"]
        self.roles.sync_weights()


def run_ppo(cfg, resume: bool = False) -> Path:
    return PPOTrainer(cfg, resume).run()
