"""Rewards given as Python functions, 'module:function(prompts, responses) -> list[float]': import and call them
with every failure turned into one line naming the function and what was expected."""
from __future__ import annotations

import importlib

import torch


class RewardFunctionError(ValueError):
    """A reward function that cannot be imported, raises, or returns the wrong thing."""


def load_reward_function(spec: str):
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise RewardFunctionError(f"reward.function {spec!r}: cannot import module {module_name!r} "
                                  f"({type(error).__name__}: {error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise RewardFunctionError(f"reward.function {spec!r}: module {module_name!r} has no function {function_name!r}")
    return function


def call_reward_function(function, spec: str, prompts: list[str], responses: list[str]) -> torch.Tensor:
    """Scores as a float tensor of shape (len(responses),), or a RewardFunctionError."""
    try:
        scores = function(prompts, responses)
    except Exception as error:
        raise RewardFunctionError(f"reward.function {spec!r} raised {type(error).__name__}: {error}") from None
    try:
        tensor = torch.as_tensor(scores, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise RewardFunctionError(f"reward.function {spec!r} returned {type(scores).__name__}; expected a list of "
                                  f"{len(responses)} numbers") from None
    if tensor.shape != (len(responses),):
        raise RewardFunctionError(f"reward.function {spec!r} returned shape {tuple(tensor.shape)}; expected "
                                  f"({len(responses)},), one score per response")
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).nonzero()[0])
        raise RewardFunctionError(f"reward.function {spec!r} returned a non-finite score at index {bad}")
    return tensor


def probe_reward_function(spec: str, prompts: list[str], responses: list[str]) -> None:
    """Import `spec` and call it once on a few sample rows, so that a function which raises, returns the wrong
    number of scores or a non-finite one fails in seconds, before any actor starts."""
    function = load_reward_function(spec)
    try:
        call_reward_function(function, spec, prompts, responses)
    except RewardFunctionError as error:
        raise RewardFunctionError(f"{error} (in a trial call on {len(prompts)} sample rows, before start)") from None
