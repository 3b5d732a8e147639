"""The SFT driver (`rlhf sft`): supervised fine-tuning on demonstrations, data parallel over the policy actors.

  1. take the step's batch (length-grouped so little compute goes to padding; seeded order per epoch)
  2. one optimizer step on all actors: next-token loss on response tokens only
  3. every `sft.eval_every` steps: validation loss (or the reward of sampled responses); the best is exported
  4. checkpoint; at the end the final model is exported to <run>/final_hf
"""
from __future__ import annotations

import functools

from actors.evaluator import PolicyEvaluator
from actors.sft import SFTWorker
from rlhf.batches import collate_sft, length_grouped_order
from rlhf.data.demonstrations import tokenize_demonstrations
from rlhf.data.loading import load_rows
from rlhf.data.prompts import left_pad
from rlhf.config import STAGE_ROLES
from rlhf.reward_function import probe_reward_function
from rlhf.seeding import derive_seed

from .supervised import SupervisedTrainer


class SFTTrainer(SupervisedTrainer):
    stage, role, worker_cls, prefix, rows_name = "sft", STAGE_ROLES["sft"], SFTWorker, "sft", "demonstrations"

    def __init__(self, cfg, resume: bool = False):
        super().__init__(cfg, resume)
        cfg = self.cfg
        self.higher_is_better = cfg.sft.select_by == "reward"
        rows = load_rows(cfg.sft.data, "demonstrations", key="sft.data")
        self.samples = tokenize_demonstrations(rows, cfg.sft, self.tokenizer, cfg.sft.data)
        self.split(len(self.samples), require_validation=cfg.sft.select_by == "val_loss")
        if self.higher_is_better and cfg.reward.function:
            prompts, responses = zip(*[(self.tokenizer.decode(p), self.tokenizer.decode(r, skip_special_tokens=True))
                                       for p, r in self.samples[:4]])
            probe_reward_function(cfg.reward.function, list(prompts), list(responses))
        self.evaluator = None

    @functools.lru_cache(maxsize=1)
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's length-grouped batches of training rows (computed once per epoch)."""
        lengths = [sum(map(len, self.samples[i])) for i in self.train_rows]
        return length_grouped_order(lengths, self.cfg.sft.batch_size,
                                    derive_seed(self.cfg.run.seed, "sft_batches", epoch))

    def batch(self, step: int):
        epoch, index = divmod(step, self.steps_per_epoch)
        rows = self.epoch_batches(epoch)[index]
        return collate_sft([self.samples[self.train_rows[i]] for i in rows], self.tokenizer.pad_token_id)

    def validate(self):
        metrics = {}
        if self.val_rows:
            nll = tokens = 0.0
            for rows in self.validation_chunks():
                batch = collate_sft([self.samples[i] for i in rows], self.tokenizer.pad_token_id)
                sums = self.group.map_rows("validation_rows", batch).sum(dim=0)
                nll, tokens = nll + sums[0].item(), tokens + sums[1].item()
            metrics["sft/val_loss"] = nll / tokens
        if self.cfg.sft.select_by == "reward":
            metrics["sft/val_reward"] = self.sampled_reward()
            return metrics, metrics["sft/val_reward"]
        return metrics, metrics["sft/val_loss"]

    def sampled_reward(self) -> float:
        """Mean reward (reward.function / reward.model) of responses sampled on the validation prompts."""
        if self.evaluator is None:
            self.evaluator = PolicyEvaluator(self.cfg, self.model_path, self.tokenizer_path)
        self.evaluator.load_from(self.group)
        prompts = [self.samples[i][0] for i in (self.val_rows or self.train_rows)[:128]]
        ids, mask = left_pad(prompts, self.tokenizer.pad_token_id)
        score, _ = self.evaluator.mean_score(ids, mask, self.step)
        return score

    def release(self) -> None:
        if self.evaluator is not None:
            self.evaluator.shutdown()
            self.evaluator = None


def run_sft(cfg, resume: bool = False):
    return SFTTrainer(cfg, resume).run()
