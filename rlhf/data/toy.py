"""Bundled toy tasks with a hidden ground truth, used by the default runs and tests (no files, no network).

repeat_digit: the prompt asks for a digit ("repeat 7:"); the ground truth scores each response character 1 if it is
that digit, 0.2 if it is another digit, 0 otherwise, averaged over the response. A random tiny model starts near
0.03 and PPO visibly raises it.
"""
from __future__ import annotations

import random
import re

TASKS = ("repeat_digit",)
_DIGIT = re.compile(r"repeat (\d):")


def repeat_digit_prompts(num_rows: int = 512, seed: int = 1234) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": f"repeat {rng.randrange(10)}:"} for _ in range(num_rows)]


def repeat_digit_score(prompt: str, response: str) -> float:
    """Mean per-character credit: 1 for the requested digit, 0.2 for another digit (0 for an empty response)."""
    match = _DIGIT.search(prompt)
    if match is None or not response:
        return 0.0
    target = match.group(1)
    return sum(1.0 if c == target else 0.2 if c.isdigit() else 0.0 for c in response) / len(response)


def repeat_digit_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Reward function in the `module:function` form the reward role accepts."""
    return [repeat_digit_score(p, r) for p, r in zip(prompts, responses)]


def toy_records(name: str) -> list[dict]:
    if name == "repeat_digit":
        return repeat_digit_prompts()
    raise ValueError(f"unknown toy task {name!r}; bundled tasks: {', '.join(TASKS)}")
