"""Reward functions for failure tests, imported by the reward actors: each process counts its own calls, so the
driver's trial call before start succeeds and the actor's call at the second PPO step fails."""
CALLS = {"count": 0}


def fails_at_second_call(prompts, responses):
    CALLS["count"] += 1
    if CALLS["count"] == 2:
        raise ZeroDivisionError("the judge crashed")
    return [0.0] * len(responses)
