"""Reward-model training role: a scalar-head model under DeepSpeed ZeRO trained with InstructGPT's K-wise loss,
one score per response (the prompt read once for its K responses), all C(K,2) pairs of a prompt in one batch
element."""
from __future__ import annotations

import torch

from rlhf.algo.losses import ranking_batch_loss, ranking_prompt_losses
from rlhf.batches import RankingBatch
from rlhf.forward import ranking_scores, token_scores
from rlhf.models import load_scalar_model

from .trainable import TrainableWorker


class RewardModelWorker(TrainableWorker):
    def setup(self, model_path: str, total_steps: int) -> None:
        self.build_engine(lambda: load_scalar_model(model_path, self.dtype, self.attention), "rm", total_steps)

    def _rewards(self, batch: RankingBatch) -> torch.Tensor:
        return ranking_scores(self.engine, batch, self.device)

    def train(self, pieces: list, plan: list) -> dict:
        self.use_threads("train")
        margin = self.cfg.rm.margin

        def micro_loss(micro: RankingBatch, global_prompts: float, update: int, micro_index: int):
            return ranking_batch_loss(self._rewards(micro), micro.ranks.to(self.device), margin, global_prompts)

        return self.run_updates(self.rows(pieces), plan, micro_loss, count=len)

    def validation_rows(self, pieces: list) -> torch.Tensor:
        """Per prompt of this rank's block: (K-wise loss, pair accuracy, pairs), shape (prompts, 3)."""
        self.use_threads("train")

        def fn(micro: RankingBatch) -> torch.Tensor:
            losses, accuracies, pairs = ranking_prompt_losses(self._rewards(micro), micro.ranks.to(self.device),
                                                              self.cfg.rm.margin)
            return torch.stack([losses.float().cpu(), accuracies.cpu(), pairs], dim=1)

        return self.forward_batches(self.rows(pieces), fn)

    def scores(self, pieces: list) -> torch.Tensor:
        """Raw scores of this rank's block of complete sequences (for bias normalization)."""
        self.use_threads("train")
        def fn(micro) -> torch.Tensor:
            return token_scores(self.engine, micro.input_ids, micro.attention_mask, self.device).float()

        return self.forward_batches(self.rows(pieces), fn)
