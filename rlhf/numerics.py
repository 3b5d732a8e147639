"""Numerical faults of training: optimizer updates skipped for a non-finite loss or gradient norm (the actors skip
them on every rank together, `actors/guarded_optimizer.py`) are counted here, per trainable role and across steps,
and a streak of `run.max_bad_steps` skipped updates in a row stops the run with one line."""
from __future__ import annotations


class NumericalFaultError(RuntimeError):
    """Too many optimizer updates in a row had a non-finite loss or gradient norm, worded as one line."""


class BadStepGuard:
    """Consecutive skipped optimizer updates of each role (a good update of a role resets its count)."""

    def __init__(self, max_bad_steps: int):
        self.max_bad_steps = max_bad_steps
        self.streaks: dict[str, int] = {}
        self.since: dict[str, int] = {}        # the step in which a role's current streak began

    def observe(self, role: str, skipped: list[bool], step: int, last_good: str) -> None:
        """Count this step's updates of `role` in order (True = skipped). `last_good` names the last good
        checkpoint for the error, which is raised as soon as a streak reaches `max_bad_steps`."""
        for bad in skipped:
            if not bad:
                self.streaks[role] = 0
                continue
            if not self.streaks.get(role):
                self.since[role] = step
            self.streaks[role] = self.streaks.get(role, 0) + 1
            if self.streaks[role] >= self.max_bad_steps:
                began = self.since[role]
                steps = f"step {step}" if began == step else f"steps {began}-{step}"
                raise NumericalFaultError(
                    f"{role}: {self.streaks[role]} optimizer updates in a row had a non-finite loss or gradient norm "
                    f"({steps}) and were skipped on every rank; stopping at run.max_bad_steps = {self.max_bad_steps}. "
                    f"{last_good}")

    @property
    def clean(self) -> bool:
        """No role is inside a streak of skipped updates: the state is good to checkpoint."""
        return not any(self.streaks.values())

    def state_dict(self) -> dict:
        return {"streaks": dict(self.streaks), "since": dict(self.since)}

    def load_state_dict(self, state: dict) -> None:
        self.streaks, self.since = dict(state["streaks"]), dict(state["since"])


def last_good_checkpoint(latest, stage: str) -> str:
    """The sentence naming the checkpoint a stopped run can be resumed from."""
    if latest is None:
        return "No checkpoint was written before; lower the learning rate or check the data and models."
    return f"The last good checkpoint is {latest} (`rlhf {stage} --resume` continues from it)."
