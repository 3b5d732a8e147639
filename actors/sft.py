"""The SFT role: a causal LM under DeepSpeed ZeRO trained with next-token loss on response tokens only."""
from __future__ import annotations

import torch

from rlhf.algo.losses import lm_loss, token_nll
from rlhf.batches import TokenBatch
from rlhf.models import load_causal_lm

from .trainable import TrainableWorker


def target_tokens(batch: TokenBatch) -> float:
    return batch.loss_mask[:, 1:].sum().item()


class SFTWorker(TrainableWorker):
    def setup(self, model_path: str, total_steps: int) -> None:
        self.build_engine(lambda: load_causal_lm(model_path, self.dtype, self.attention), "sft", total_steps)

    def _logits(self, batch: TokenBatch) -> torch.Tensor:
        ids, attention = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        return self.engine(input_ids=ids, attention_mask=attention).logits[:, :-1]

    def train(self, pieces: list, plan: list) -> dict:
        self.use_threads("train")

        def micro_loss(micro: TokenBatch, global_tokens: float, update: int, micro_index: int):
            loss = lm_loss(self._logits(micro), micro.input_ids[:, 1:].to(self.device),
                           micro.loss_mask[:, 1:].to(self.device), global_tokens)
            return loss, {"sft/loss": loss.detach()}

        return self.run_updates(self.rows(pieces), plan, micro_loss, count=target_tokens)

    def validation_rows(self, pieces: list) -> torch.Tensor:
        """Per row of this rank's block: (sum of target-token NLL, number of target tokens), shape (rows, 2)."""
        self.use_threads("train")

        def fn(micro: TokenBatch) -> torch.Tensor:
            mask = micro.loss_mask[:, 1:].to(self.device)
            nll = token_nll(self._logits(micro), micro.input_ids[:, 1:].to(self.device)) * mask
            return torch.stack([nll.sum(dim=1), mask.sum(dim=1)], dim=1)

        return self.forward_batches(self.rows(pieces), fn)
