"""The reward-model driver (`rlhf rm`): InstructGPT's K-wise ranking loss, data parallel over the reward actors.

  1. take the step's prompts (each with its K ranked responses: one batch element, all C(K,2) pairs)
  2. one optimizer step on all actors: -mean log sigmoid(r_w - r_l - margin) over each prompt's pairs
  3. every `rm.eval_every` steps: held-out pair accuracy
  4. at the end: bias normalization (shift, optionally scale, so the reference demonstrations score mean 0, std 1),
     saved with the exported model in <run>/final_hf and applied wherever that model scores
"""
from __future__ import annotations

import functools

import torch

from actors.reward_trainer import RewardModelWorker
from actors.roles import gather
from rlhf.algo.ppo import step_seed
from rlhf.algo.rewards import bias_normalization
from rlhf.batches import collate_rankings, collate_sft
from rlhf.data.comparisons import tokenize_comparisons
from rlhf.data.demonstrations import load_rows, tokenize_demonstrations
from rlhf.data.loading import DataError
from rlhf.models import load_tokenizer, resolve_model_path, save_reward_normalization

from .sft import split_rows
from .supervised import SupervisedTrainer


class RMTrainer(SupervisedTrainer):
    role, worker_cls, prefix = "reward", RewardModelWorker, "rm"
    higher_is_better, export_best = True, False

    def __init__(self, cfg, resume: bool = False):
        super().__init__(cfg, resume)
        self.section = cfg.rm
        self.model_path = resolve_model_path(cfg.rm.base or cfg.model.policy, cfg.model.cache_dir, cfg.model.tiny)
        self.tokenizer_path = self.model_path
        self.tokenizer = load_tokenizer(self.model_path)
        self.groups = tokenize_comparisons(load_rows(cfg.rm.data, "comparisons"), cfg.rm, self.tokenizer, cfg.rm.data)
        self.train_rows, self.val_rows = split_rows(len(self.groups), cfg.rm.validation_fraction, cfg.run.seed)
        if len(self.train_rows) < cfg.rm.batch_size:
            raise DataError(f"{cfg.rm.data}: {len(self.train_rows)} training prompts, fewer than rm.batch_size "
                            f"{cfg.rm.batch_size}")
        self.steps_per_epoch = len(self.train_rows) // cfg.rm.batch_size
        self.reference = self.load_reference() if cfg.rm.normalize != "none" else None

    def load_reference(self):
        """Up to rm.reference_samples demonstrations (seeded choice) that define the bias normalization."""
        source = self.cfg.rm.reference_data or self.cfg.sft.data
        samples = tokenize_demonstrations(load_rows(source, "demonstrations"), self.cfg.sft, self.tokenizer, source)
        keep, _ = split_rows(len(samples), 0.0, self.cfg.run.seed + 1)
        return [samples[i] for i in keep[:self.cfg.rm.reference_samples]]

    @functools.lru_cache(maxsize=1)
    def epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(step_seed(self.cfg.run.seed, epoch, 4))
        return torch.randperm(len(self.train_rows), generator=generator).tolist()

    def batch(self, step: int):
        epoch, index = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        size = self.cfg.rm.batch_size
        rows = order[index * size:(index + 1) * size]
        return collate_rankings([self.groups[self.train_rows[i]] for i in rows], self.tokenizer.pad_token_id)

    def validate(self):
        size = self.cfg.rm.batch_size
        rows = self.val_rows or self.train_rows[:size]
        sums = {}
        for start in range(0, len(rows) - size + 1, size):
            batch = collate_rankings([self.groups[i] for i in rows[start:start + size]], self.tokenizer.pad_token_id)
            for rank_sums in gather(self.group.call("validation_sums", batch)):
                for key, value in rank_sums.items():
                    sums[key] = sums.get(key, 0.0) + value
        prompts = (len(rows) // size) * size
        metrics = {"rm/val_loss": sums["rm/loss"] / prompts, "rm/val_accuracy": sums["rm/correct_pairs"] / sums["rm/pairs"]}
        return metrics, metrics["rm/val_accuracy"]

    def on_finish(self) -> None:
        folder = self.run_dir / "final_hf"
        shift, scale = 0.0, 1.0
        if self.reference is not None:
            shift, scale = bias_normalization(self.reference_scores(), self.cfg.rm.normalize)
        gather(self.group.call("export_hf", str(folder), self.tokenizer_path))
        save_reward_normalization(folder, shift, scale, self.cfg.rm.reference_data or self.cfg.sft.data)

    def reference_scores(self) -> torch.Tensor:
        """Raw scores of the reference demonstrations (prompt + response), in chunks the actors split evenly."""
        chunk = self.cfg.rm.batch_size
        usable = (len(self.reference) // chunk) * chunk or len(self.reference)
        parts = []
        for start in range(0, usable, chunk):
            batch = collate_sft(self.reference[start:start + chunk], self.tokenizer.pad_token_id)
            parts += gather(self.group.call("scores", batch))
        return torch.cat(parts)


def run_rm(cfg, resume: bool = False):
    return RMTrainer(cfg, resume).run()
