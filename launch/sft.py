"""The SFT driver (`rlhf sft`): supervised fine-tuning on demonstrations, data parallel over the policy actors.

  1. take the step's batch (length-grouped so little compute goes to padding; seeded order per epoch)
  2. one optimizer step on all actors: next-token loss on response tokens only
  3. every `sft.eval_every` steps: validation loss (or the reward of sampled responses); the best is exported
  4. checkpoint; at the end the final model is exported to <run>/final_hf
"""
from __future__ import annotations

import functools

import torch

from actors.evaluator import PolicyEvaluator
from actors.roles import gather
from actors.sft import SFTWorker
from rlhf.batches import collate_sft, length_grouped_order
from rlhf.data.demonstrations import load_rows, tokenize_demonstrations
from rlhf.data.loading import DataError
from rlhf.data.prompts import left_pad
from rlhf.models import load_tokenizer, resolve_model_path
from rlhf.algo.ppo import step_seed

from .supervised import SupervisedTrainer


def split_rows(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, validation) row indices."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = int(round(count * fraction))
    return order[held_out:], order[:held_out]


class SFTTrainer(SupervisedTrainer):
    role, worker_cls, prefix = "policy", SFTWorker, "sft"

    def __init__(self, cfg, resume: bool = False):
        super().__init__(cfg, resume)
        self.section = cfg.sft
        self.higher_is_better = cfg.sft.select_by == "reward"
        self.model_path = resolve_model_path(cfg.model.policy, cfg.model.cache_dir, cfg.model.tiny)
        self.tokenizer_path = self.model_path
        self.tokenizer = load_tokenizer(self.model_path)
        rows = load_rows(cfg.sft.data, "demonstrations")
        self.samples = tokenize_demonstrations(rows, cfg.sft, self.tokenizer, cfg.sft.data)
        self.train_rows, self.val_rows = split_rows(len(self.samples), cfg.sft.validation_fraction, cfg.run.seed)
        if len(self.train_rows) < cfg.sft.batch_size:
            raise DataError(f"{cfg.sft.data}: {len(self.train_rows)} training demonstrations, fewer than "
                            f"sft.batch_size {cfg.sft.batch_size}")
        self.steps_per_epoch = len(self.train_rows) // cfg.sft.batch_size
        self.evaluator = None

    @functools.lru_cache(maxsize=1)
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's length-grouped batches of training rows (computed once per epoch)."""
        lengths = [sum(map(len, self.samples[i])) for i in self.train_rows]
        return length_grouped_order(lengths, self.cfg.sft.batch_size, step_seed(self.cfg.run.seed, epoch, 2))

    def batch(self, step: int):
        epoch, index = divmod(step, self.steps_per_epoch)
        rows = self.epoch_batches(epoch)[index]
        return collate_sft([self.samples[self.train_rows[i]] for i in rows], self.tokenizer.pad_token_id)

    def validate(self):
        size = self.cfg.sft.batch_size
        metrics = {}
        if len(self.val_rows) >= size:
            nll = tokens = 0.0
            for start in range(0, len(self.val_rows) - size + 1, size):
                batch = collate_sft([self.samples[i] for i in self.val_rows[start:start + size]],
                                    self.tokenizer.pad_token_id)
                for total, count in gather(self.group.call("validation_sums", batch)):
                    nll, tokens = nll + total, tokens + count
            metrics["sft/val_loss"] = nll / tokens
        if self.cfg.sft.select_by == "reward":
            metrics["sft/val_reward"] = self.sampled_reward()
            return metrics, metrics["sft/val_reward"]
        if "sft/val_loss" not in metrics:
            raise DataError(f"{self.cfg.sft.data}: fewer validation rows than sft.batch_size; raise "
                            f"sft.validation_fraction or use sft.select_by reward")
        return metrics, metrics["sft/val_loss"]

    def sampled_reward(self) -> float:
        """Mean reward (reward.function / reward.model) of responses sampled on the validation prompts."""
        if self.evaluator is None:
            self.evaluator = PolicyEvaluator(self.cfg, self.model_path, self.tokenizer_path)
        self.evaluator.load_from(self.group)
        prompts = [self.samples[i][0] for i in (self.val_rows or self.train_rows)[:128]]
        ids, mask = left_pad(prompts, self.tokenizer.pad_token_id)
        score, _ = self.evaluator.mean_score(ids, mask, step_seed(self.cfg.run.seed, self.step, 3))
        return score

    def on_finish(self) -> None:
        super().on_finish()
        if self.evaluator is not None:
            self.evaluator.shutdown()


def run_sft(cfg, resume: bool = False):
    return SFTTrainer(cfg, resume).run()
