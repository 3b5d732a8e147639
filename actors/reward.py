"""The reward role: a frozen scalar-head model (score at the last real token) or a Python reward function."""
from __future__ import annotations

import torch

from rlhf.experience import Experience
from rlhf.forward import sequence_scores, token_scores
from rlhf.generation import prompt_and_response_texts
from rlhf.models import load_reward_normalization, load_scalar_model, load_tokenizer, resolve_model_path
from rlhf.reward_function import call_reward_function, load_reward_function

from .base import in_phase
from .frozen import FrozenWorker


class RewardWorker(FrozenWorker):
    def setup(self, policy_tokenizer_path: str) -> None:
        self.policy_tokenizer = load_tokenizer(policy_tokenizer_path)
        spec = self.cfg.reward
        if spec.function is not None:
            self.function = load_reward_function(spec.function)
            return
        self.function = None
        path = resolve_model_path(spec.model, self.cfg.model.cache_dir)
        self.tokenizer = load_tokenizer(path)
        self.same_vocab = self.tokenizer.get_vocab() == self.policy_tokenizer.get_vocab()
        self.shift, self.scale = load_reward_normalization(path)   # bias normalization saved by `rlhf rm`
        self.wrap(lambda: load_scalar_model(path, self.dtype, self.attention))

    def texts(self, exp: Experience) -> tuple[list[str], list[str]]:
        return prompt_and_response_texts(exp, self.policy_tokenizer)

    @in_phase("score")
    def scores(self, pieces: list) -> torch.Tensor:
        """One score per sample of this rank's block."""
        exp = self.rows(pieces)
        if self.function is not None:
            prompts, responses = self.texts(exp)
            return call_reward_function(self.function, self.cfg.reward.function, prompts, responses)
        return self.forward_shard(exp, self._model_scores)

    def _model_scores(self, micro: Experience) -> torch.Tensor:
        if self.same_vocab:
            return (sequence_scores(self.runner, micro, self.device) - self.shift) / self.scale
        # a reward model with its own tokenizer reads the text
        prompts, responses = self.texts(micro)
        batch = self.tokenizer([p + r for p, r in zip(prompts, responses)], return_tensors="pt", padding=True)
        scores = token_scores(self.runner, batch["input_ids"], batch["attention_mask"], self.device)
        return (scores - self.shift) / self.scale
