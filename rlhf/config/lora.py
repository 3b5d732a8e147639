"""The `model.lora` section: LoRA adapters (Hu et al. 2021) through PEFT on the PPO policy, and on the value model
when asked. The adapters are built and merged by `rlhf/lora.py`."""
from __future__ import annotations

from typing import Union

from pydantic import Field, field_validator

from .base import Section


class LoraSettings(Section):
    rank: int = Field(0, ge=0)
    """LoRA rank r of the PPO policy's adapters; 0 = no LoRA (every weight trains). With LoRA only the adapters
    (r x (in + out) per targeted layer) train and carry gradients and optimizer state; the base stays frozen."""
    alpha: float = Field(16.0, gt=0)
    """LoRA alpha: the update is (alpha / rank) * B A."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapters' input in training (0 keeps PPO's old and new log-probs the same function, as the
    rest of the model, whose dropout is off)."""
    target_modules: Union[str, list[str]] = "all-linear"
    """Layers that get adapters: 'all-linear' (every linear layer but the output head) or a list of module names
    or name suffixes (e.g. [q_proj, v_proj]); a name that matches nothing is refused at start-up."""
    value: bool = False
    """Also put adapters on the value model (its scalar head trains in full)."""
    reference_from_policy: bool = True
    """The reference log-probs come from the policy actors with the adapters switched off (the base is the initial
    policy), so no reference actors start and no second copy of the base is loaded. False: reference actors as
    without LoRA. Needs model.reference unset or equal to model.policy."""

    @field_validator("target_modules")
    @classmethod
    def _named(cls, value):
        names = [value] if isinstance(value, str) else value
        if not names or any(not name.strip() for name in names):
            raise ValueError("name at least one module (or 'all-linear')")
        return value

    @property
    def enabled(self) -> bool:
        return self.rank > 0
