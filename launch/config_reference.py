"""`rlhf config`: the config reference generated from the schema's field docstrings (one source of truth)."""
from __future__ import annotations

import yaml
from pydantic import BaseModel

from rlhf.config import Config


def reference_lines(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += reference_lines(annotation, key + ".")
            continue
        default = field.default
        doc = " ".join((field.description or "").split())
        lines.append(f"{key} = {default!r}: {doc}")
    return lines


def print_reference(defaults_only: bool = False) -> None:
    if defaults_only:
        print(yaml.safe_dump(Config().model_dump(mode="json"), sort_keys=False))
    else:
        print("\n".join(reference_lines()))
