"""The policy role: a causal LM under DeepSpeed ZeRO that scores old log-probs, trains with the clipped PPO loss
(+ entropy, KL-as-loss, PPO-ptx), and publishes its full weights for the rollout actors."""
from __future__ import annotations

import torch

from rlhf.algo.losses import lm_loss
from rlhf.experience import Experience
from rlhf.forward import policy_objective
from rlhf.lora import adapters_off
from rlhf.models import load_causal_lm

from .base import in_phase
from .trainable import TrainableWorker


class PolicyWorker(TrainableWorker):
    def setup(self, model_path: str) -> None:
        self.build_engine(lambda: load_causal_lm(model_path, self.dtype, self.attention), "policy")

    @in_phase("score")
    def logprobs(self, pieces: list) -> torch.Tensor:
        """log pi(a_t) of the sampled tokens of this rank's block (logits / temperature)."""
        return self.forward_batches(self.rows(pieces), lambda micro: self.response_token_stats(micro)[0])

    def reference_logprobs(self, pieces: list) -> torch.Tensor:
        """log pi_ref of the sampled tokens from this policy with its LoRA adapters off: the base is the initial
        policy, so the reference needs no actors of its own (`model.lora.reference_from_policy`)."""
        with adapters_off(self.engine.module):
            return self.logprobs(pieces)

    @in_phase("train")
    def train(self, pieces: list, scored: dict, plan: list, kl_coef: float, ptx: tuple | None = None) -> dict:
        """PPO epochs over the minibatches of `plan` (global rows) on this rank's block: its pieces plus `scored`
        (the block's old/reference log-probs, values, advantages, returns from the driver). `ptx` = (input_ids,
        mask), each (updates, this rank's rows, length): its rows of one pretraining block per optimizer step."""
        ppo = self.cfg.ppo
        exp = self.rows(pieces).replace(**scored)

        def micro_loss(micro: Experience, global_tokens: float, update: int, micro_index: int):
            logprobs, entropies = self.response_token_stats(micro, with_entropy=True)
            loss, stats = policy_objective(logprobs, entropies, micro, ppo, kl_coef, global_tokens, self.device)
            if ptx is not None and micro_index == 0:
                loss = loss + ppo.ptx_coef * self._ptx_loss(ptx, update, stats)
            stats["policy/loss"] = loss.detach()
            return loss, stats

        return self.run_updates(exp, plan, micro_loss)

    def _ptx_loss(self, ptx: tuple, update: int, stats: dict) -> torch.Tensor:
        """Pretraining LM loss on this rank's rows of the update's ptx block, normalized by the block's tokens."""
        ids, attention = ptx[0][update].to(self.device), ptx[1][update].to(self.device)
        global_tokens = self.global_sum(attention[:, 1:].sum().item())
        logits = self.engine(input_ids=ids, attention_mask=attention).logits
        loss = lm_loss(logits[:, :-1], ids[:, 1:], attention[:, 1:].float(), global_tokens)
        stats["policy/ptx_loss"] = loss.detach()
        return loss

