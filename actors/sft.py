"""The SFT role: a causal LM under DeepSpeed ZeRO trained with next-token loss on response tokens only."""
from __future__ import annotations


from rlhf.algo.losses import lm_loss
from rlhf.batches import TokenBatch
from rlhf.models import load_causal_lm

from .trainable import TrainableWorker


def target_tokens(batch: TokenBatch) -> float:
    return batch.loss_mask[:, 1:].sum().item()


class SFTWorker(TrainableWorker):
    def setup(self, model_path: str) -> None:
        sft = self.cfg.sft
        section = self.cfg.deepspeed.policy.model_copy(update={"micro_batch_size": sft.micro_batch_size})
        self.build_engine(load_causal_lm(model_path, self.dtype), sft.lr, section, minibatch=sft.batch_size,
                          warmup_steps=sft.warmup_steps)

    def _loss(self, batch: TokenBatch, num_tokens):
        ids, attention = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        logits = self.engine(input_ids=ids, attention_mask=attention).logits
        return lm_loss(logits[:, :-1], ids[:, 1:], batch.loss_mask[:, 1:].to(self.device), num_tokens)

    def train(self, batch: TokenBatch, plan: list) -> dict:
        def micro_loss(micro: TokenBatch, global_tokens: float, update: int, micro_index: int):
            loss = self._loss(micro, global_tokens)
            return loss, {"sft/loss": loss.detach()}

        return self.run_updates(batch, plan, micro_loss, count=target_tokens)

    def validation_sums(self, batch: TokenBatch) -> tuple[float, float]:
        """(sum of token NLL, token count) over this rank's shard: the driver adds ranks and divides."""
        nll = self.forward_batches(batch, lambda micro: self._loss(micro, 1.0).reshape(1))
        return nll.sum().item(), target_tokens(batch.shard(self.rank, self.world_size))
