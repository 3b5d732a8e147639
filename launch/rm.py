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
from rlhf.algo.rewards import bias_normalization
from rlhf.batches import collate_rankings, collate_sft
from rlhf.data.comparisons import tokenize_comparisons
from rlhf.data.demonstrations import tokenize_demonstrations
from rlhf.data.loading import load_rows
from rlhf.config import STAGE_ROLES
from rlhf.models import save_reward_normalization
from rlhf.seeding import derive_seed

from .supervised import SupervisedTrainer, split_rows


class RMTrainer(SupervisedTrainer):
    stage, role, worker_cls, prefix, rows_name = "rm", STAGE_ROLES["rm"], RewardModelWorker, "rm", "prompts"
    higher_is_better, export_best = True, False

    def __init__(self, cfg, resume: bool = False):
        super().__init__(cfg, resume)
        cfg = self.cfg
        rows = load_rows(cfg.rm.data, "comparisons", key="rm.data")
        self.comparisons = tokenize_comparisons(rows, cfg.rm, self.tokenizer, cfg.rm.data)
        self.split(len(self.comparisons))
        self.reference = self.load_reference() if cfg.rm.normalize != "none" else None

    def load_reference(self):
        """Up to rm.reference_samples demonstrations (seeded choice) that define the bias normalization."""
        source, key = (self.cfg.rm.reference_data, "rm.reference_data") if self.cfg.rm.reference_data \
            else (self.cfg.sft.data, "sft.data")
        samples = tokenize_demonstrations(load_rows(source, "demonstrations", key=key), self.cfg.sft, self.tokenizer,
                                          source)
        keep, _ = split_rows(len(samples), 0.0, derive_seed(self.cfg.run.seed, "reference_sample"))
        return [samples[i] for i in keep[:self.cfg.rm.reference_samples]]

    @functools.lru_cache(maxsize=1)
    def epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.cfg.run.seed, "rm_batches", epoch))
        return torch.randperm(len(self.train_rows), generator=generator).tolist()

    def batch(self, step: int):
        epoch, index = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        size = self.cfg.rm.batch_size
        rows = order[index * size:(index + 1) * size]
        return collate_rankings([self.comparisons[self.train_rows[i]] for i in rows], self.tokenizer.pad_token_id)

    def validate(self):
        """Held-out loss (mean over prompts) and pair accuracy (over all pairs), from every validation prompt."""
        per_prompt = torch.cat([
            self.group.map_rows("validation_rows",
                                collate_rankings([self.comparisons[i] for i in rows], self.tokenizer.pad_token_id))
            for rows in self.validation_chunks()])
        losses, accuracies, pairs = per_prompt.unbind(dim=1)
        metrics = {"rm/val_loss": losses.mean().item(),
                   "rm/val_accuracy": ((accuracies * pairs).sum() / pairs.sum()).item()}
        return metrics, metrics["rm/val_accuracy"]

    def on_finish(self) -> None:
        folder = self.run_dir / "final_hf"
        shift, scale = 0.0, 1.0
        if self.reference is not None:
            shift, scale = bias_normalization(self.reference_scores(), self.cfg.rm.normalize)
        self.group.run("export_hf", str(folder), self.tokenizer_path)
        save_reward_normalization(folder, shift, scale, self.cfg.rm.reference_data or self.cfg.sft.data)

    def reference_scores(self) -> torch.Tensor:
        """Raw scores of every reference demonstration (prompt + response), in chunks of rm.batch_size."""
        size = self.cfg.rm.batch_size
        return torch.cat([
            self.group.map_rows("scores", collate_sft(self.reference[start:start + size], self.tokenizer.pad_token_id))
            for start in range(0, len(self.reference), size)])


def run_rm(cfg, resume: bool = False):
    return RMTrainer(cfg, resume).run()
