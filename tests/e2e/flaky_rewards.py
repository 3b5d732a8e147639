"""Reward functions for failure tests, imported by the reward actors: each process counts its own calls, so the
driver's trial call before start succeeds and the actor's calls misbehave from a chosen PPO step."""
CALLS = {"count": 0}


def fails_at_second_call(prompts, responses):
    CALLS["count"] += 1
    if CALLS["count"] == 2:
        raise ZeroDivisionError("the judge crashed")
    return [0.0] * len(responses)


def explodes_from_third_call(prompts, responses):
    """Finite but huge scores from the third PPO step on: the value loss overflows to inf."""
    CALLS["count"] += 1
    return [3e38 if CALLS["count"] >= 3 else 0.0] * len(responses)
