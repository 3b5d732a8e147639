"""What every config section shares: the base class (unknown keys refused, field docstrings kept for `rlhf config`),
the one-line config error, and the way validators name the key they refuse."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A config problem, worded as one line that names the key."""


class Section(BaseModel):
    # a field whose key is a Python keyword (`rollout.async`) is named `async_` with the key as its alias, and
    # dumps under the key, so a dumped config validates again
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True,
                              serialize_by_alias=True, validate_by_name=True, validate_by_alias=True)


def fail(key: str, message: str):
    """Inside validators: pydantic wraps this into a ValidationError that `_format_error` turns into one line."""
    raise ValueError(f"[{key}] {message}")
