"""Rollout engines. `RolloutEngine` is the interface a faster engine (vLLM, SGLang) would implement; the shipped
engine is transformers `generate`: batched sampling with KV cache, left-padded prompts, stop at EOS."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .experience import Experience


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n_samples_per_prompt: int = 1
    micro_batch_size: int | None = None     # sequences sampled at once (None: all)

    @classmethod
    def from_rollout(cls, rollout, n_samples_per_prompt: int | None = None) -> "SamplingParams":
        """From the config's `rollout` section; `n_samples_per_prompt` replaces its own (1 for evaluation)."""
        n = rollout.n_samples_per_prompt if n_samples_per_prompt is None else n_samples_per_prompt
        return cls(rollout.max_new_tokens, rollout.temperature, rollout.top_p, rollout.top_k, n,
                   rollout.micro_batch_size)


class RolloutEngine(Protocol):
    """What a rollout engine offers the rollout role: sampling (token ids in; token ids and the log-prob of each
    sampled token under the engine's own model at the sampling temperature out, as `Experience.rollout_logprobs`),
    and new weights by name, whole or bucket by bucket."""

    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, prompt_index: torch.Tensor,
                 params: SamplingParams, seed: int) -> Experience: ...

    def load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None: ...

    def check_weight_names(self, names_and_shapes: list[tuple[str, tuple]]) -> None: ...


def response_mask_from_tokens(responses: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1 on tokens up to and including the first EOS (all tokens when there is none); and whether EOS was reached.

    Works when pad == eos (e.g. SmolLM2): what follows the first EOS is masked either way.
    """
    is_eos = responses == eos_token_id
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (eos_before == 0).float(), is_eos.any(dim=1)


class SampledLogprobs:
    """A logits processor that records log p(token) of each sampled token at `temperature`, holding one step's
    log-probs at a time (the token sampled at step t is the last input at step t + 1; `finish` takes the last)."""

    def __init__(self, temperature: float):
        self.temperature, self.previous, self.taken = temperature, None, []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._take(input_ids)
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def _take(self, input_ids: torch.Tensor) -> None:
        if self.previous is not None:
            self.taken.append(self.previous.gather(1, input_ids[:, -1:]))

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(rows, generated tokens) log-probs, given the final sequences."""
        self._take(sequences)
        self.previous = None
        return torch.cat(self.taken, dim=1)


class HFGenerateEngine:
    """Sampling with `model.generate` (KV cache). Deterministic for a given seed on a given device."""

    def __init__(self, model, tokenizer, device: torch.device):
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, device

    @torch.no_grad()
    def generate(self, prompt_ids, prompt_mask, prompt_index, params: SamplingParams, seed: int) -> Experience:
        """n samples per prompt, `params.micro_batch_size` sequences at a time (one random stream, seeded once)."""
        n = params.n_samples_per_prompt
        prompt_ids = prompt_ids.repeat_interleave(n, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(n, dim=0)
        torch.manual_seed(seed)
        step = params.micro_batch_size or len(prompt_ids)
        parts = [self._sample(prompt_ids[i:i + step], prompt_mask[i:i + step], params)
                 for i in range(0, len(prompt_ids), step)]
        responses, logprobs = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        response_mask, ends_with_eos = response_mask_from_tokens(responses, self.tokenizer.eos_token_id)
        responses = torch.where(response_mask.bool(), responses, self.tokenizer.pad_token_id)
        return Experience(
            rollout_logprobs=logprobs * response_mask,
            sequences=torch.cat([prompt_ids, responses], dim=1),
            attention_mask=torch.cat([prompt_mask, response_mask.long()], dim=1),
            response_mask=response_mask,
            ends_with_eos=ends_with_eos,
            prompt_index=prompt_index.repeat_interleave(n),
            prompt_length=prompt_ids.shape[1],
        )

    def _sample(self, prompt_ids, prompt_mask, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Response tokens (rows, max_new_tokens) on CPU, padded past the point where every row stopped, and their
        log-probs under the model at the sampling temperature (before top-k / top-p truncation, and before the
        one-token minimum length masks EOS: the same function the policy scores)."""
        from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor

        recorder = SampledLogprobs(params.temperature)
        output = self.model.generate(
            input_ids=prompt_ids.to(self.device), attention_mask=prompt_mask.to(self.device), do_sample=True,
            temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None,
            max_new_tokens=params.max_new_tokens, use_cache=True,
            # the recorder runs first; the minimum length after it (generate puts custom processors before the
            # temperature / top-k / top-p warpers)
            logits_processor=LogitsProcessorList([recorder, MinNewTokensLengthLogitsProcessor(
                prompt_ids.shape[1], 1, self.tokenizer.eos_token_id, device=self.device)]),
            eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
        )
        responses, logprobs = output[:, prompt_ids.shape[1]:].cpu(), recorder.finish(output).cpu()
        # generate stops when every row is done; pad to the fixed width so shards from all actors line up
        missing = params.max_new_tokens - responses.shape[1]
        if missing > 0:
            pad = torch.full((responses.shape[0], missing), self.tokenizer.pad_token_id, dtype=responses.dtype)
            responses = torch.cat([responses, pad], dim=1)
            logprobs = torch.cat([logprobs, torch.zeros(responses.shape[0], missing)], dim=1)
        return responses, logprobs

    def load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Copy (name, tensor) pairs into the model's parameters in place (one bucket of a collective sync)."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in named_tensors:
                params[name].copy_(tensor)

    def check_weight_names(self, names_and_shapes: list[tuple[str, tuple]]) -> None:
        params = dict(self.model.named_parameters())
        missing = [name for name, _ in names_and_shapes if name not in params]
        other = [name for name, shape in names_and_shapes if name in params and tuple(params[name].shape) != tuple(shape)]
        if missing or other:
            raise RuntimeError(f"weight sync: the rollout model lacks {missing[:3]} or has other shapes for {other[:3]}; "
                               f"are policy and rollout the same architecture?")


# the table the config's `rollout.engine` choices come from: name -> class built as cls(model, tokenizer, device)
ENGINES = {"hf": HFGenerateEngine}


def prompt_and_response_texts(exp, tokenizer) -> tuple[list[str], list[str]]:
    """The prompts and the sampled responses of an Experience as text (padding and special tokens dropped)."""
    decode = lambda rows: tokenizer.batch_decode(rows, skip_special_tokens=True)
    responses = [row[mask.bool()] for row, mask in zip(exp.responses, exp.response_mask)]
    return decode(exp.sequences[:, :exp.prompt_length]), decode(responses)


def response_texts(exp, tokenizer) -> list[str]:
    """The sampled responses of an Experience as text (padding and special tokens dropped)."""
    return [tokenizer.decode(row[mask.bool()], skip_special_tokens=True)
            for row, mask in zip(exp.responses, exp.response_mask)]
