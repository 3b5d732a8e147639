"""The one way to derive a seed: every random stream is named by its purpose and derives from
(run.seed, purpose, step, rank), so resumed runs, recovered actors and 1-vs-N-actor layouts replay exactly without
any saved random state. Adding a stream is one entry in PURPOSES."""
from __future__ import annotations

import hashlib

PURPOSES = {
    "prompt_order": "order of the prompts, reshuffled each epoch (step = epoch)",
    "ptx_order": "order of the PPO-ptx pretraining texts (step = epoch)",
    "sampling": "the rollout actors' sampling (step = PPO step, rank = rollout actor)",
    "minibatches": "the PPO minibatch shuffle of one rollout batch (step = PPO step)",
    "model_init": "freshly initialised weights, e.g. a new value head (the same on every rank and layout)",
    "split": "the train / validation split of a supervised stage's rows",
    "sft_batches": "the length-grouped SFT batches of one epoch (step = epoch)",
    "rm_batches": "the order of the reward model's training prompts in one epoch (step = epoch)",
    "reference_sample": "the demonstrations chosen for the reward model's bias normalization",
    "evaluation": "sampling when a policy is scored (SFT selection by reward, the pipeline table)",
    "benchmark": "the random batches of `rlhf bench --memory`",
    "tamper": "which bug-inserting edits are tried on a code problem (step = the problem's position)",
    "toy_code": "the steps of a generated toy code problem (step = the problem's index)",
    "fake_critique": "which unchanged lines the fake-problem critiques of a tamper blame (step = its position)",
    "tamper_split": "the train / validation / test split of tampered problems (by problem)",
}


def derive_seed(run_seed: int, purpose: str, step: int = 0, rank: int = 0) -> int:
    """A 63-bit seed for `purpose` at (step, rank), stable across Python processes and versions (BLAKE2b, not
    `hash`). Distinct purposes give unrelated streams, so adding a stream never shifts another."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; known: {', '.join(PURPOSES)}")
    digest = hashlib.blake2b(f"{run_seed}/{purpose}/{step}/{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
