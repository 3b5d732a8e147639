"""Bundled toy tasks with a hidden ground truth, used by the default runs and tests (no files, no network).

repeat_digit: the prompt asks for a digit ("repeat 7:"); the ground truth scores each response character 1 if it is
that digit, 0.2 if it is another digit, 0 otherwise, averaged over the response. A random tiny model starts near
0.03 and PPO visibly raises it.
"""
from __future__ import annotations

import random
import re

TASKS = ("repeat_digit", "repeat_digit_eval")
NOISE_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"
RESPONSE_LENGTH = 8
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


def noisy_response(digit: str, accuracy: float, rng: random.Random) -> str:
    """RESPONSE_LENGTH characters, each the digit with probability `accuracy`, else a random digit or letter."""
    return "".join(digit if rng.random() < accuracy else rng.choice(NOISE_CHARS) for _ in range(RESPONSE_LENGTH))


def repeat_digit_demonstrations(num_rows: int = 2000, accuracy: float = 0.6, seed: int = 11) -> list[dict]:
    """Imperfect demonstrations, as human ones are: each character right with probability `accuracy`."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_rows):
        digit = str(rng.randrange(10))
        rows.append({"prompt": f"repeat {digit}:", "response": noisy_response(digit, accuracy, rng)})
    return rows


def repeat_digit_comparisons(num_rows: int = 1500, k: int = 4, seed: int = 12) -> list[dict]:
    """K responses of varied quality per prompt, ranked by the hidden ground truth (equal scores tie)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_rows):
        digit = str(rng.randrange(10))
        prompt = f"repeat {digit}:"
        responses = []
        while len(responses) < k:
            candidate = noisy_response(digit, rng.random(), rng)
            if candidate not in responses:
                responses.append(candidate)
        scores = [repeat_digit_score(prompt, r) for r in responses]
        ranks = [1 + sum(other > score for other in scores) for score in scores]
        rows.append({"prompt": prompt, "responses": responses, "ranks": ranks})
    return rows


def toy_records(name: str, kind: str = "prompts") -> list[dict]:
    """Rows of a bundled task: kind 'prompts', 'demonstrations' or 'comparisons'."""
    if name not in TASKS:
        raise ValueError(f"unknown toy task {name!r}; bundled tasks: {', '.join(TASKS)}")
    if kind == "demonstrations":
        return repeat_digit_demonstrations()
    if kind == "comparisons":
        return repeat_digit_comparisons()
    return repeat_digit_prompts(seed=999) if name == "repeat_digit_eval" else repeat_digit_prompts()
