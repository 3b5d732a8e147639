"""Loading a config: defaults <- bundled toy run <- YAML file <- dotted command-line overrides, validated once and
worded in one line; writing it back next to a run."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml
from pydantic import ValidationError

from .schema import Config, ConfigError
from .stages import for_stage

def _set_dotted(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config error: {dotted}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(args: list[str]) -> dict:
    """['--ppo.kl_coef', '0.05', '--run.name=x'] -> {'ppo': {'kl_coef': 0.05}, 'run': {'name': 'x'}} (YAML-typed)."""
    tree: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"config error: unexpected argument {arg!r}; overrides look like --section.key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"config error: {key}: missing value")
            value, i = args[i + 1], i + 1
        _set_dotted(tree, key, yaml.safe_load(value) if value != "" else "")
        i += 1
    return tree


def merge_trees(base: dict, extra: dict) -> dict:
    """`extra` over `base`, recursively for nested sections."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge_trees(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _format_error(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif message.startswith("Value error, ["):
        inner, _, message = message[len("Value error, ["):].partition("] ")
        key = f"{key}.{inner}" if key else inner
    elif "input" in first and not isinstance(first["input"], dict):
        message = f"{message} (got {first['input']!r})"
    more = f" (+{len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    return f"config error in {source}: {key}: {message}{more}"


MOVED_KEYS = {("deepspeed", "reward"): "rm.deepspeed (zero_stage, offload_*) and rm.micro_batch_size"}


def build_config(tree: dict, source: str = "config") -> Config:
    for (section, key), now in MOVED_KEYS.items():
        if isinstance(tree.get(section), dict) and key in tree[section]:
            raise ConfigError(f"config error in {source}: {section}.{key}: moved to {now}")
    try:
        return Config.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_error(error, source)) from None


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None, base: Optional[dict] = None,
                stage: Optional[str] = None) -> Config:
    """Defaults <- `base` <- YAML file <- dotted overrides, validated once; with `stage`, also checked by that
    stage's rules (`for_stage`), so the command line fails before anything is loaded."""
    tree = dict(base or {})
    source = "defaults"
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config error: {path}: no such file")
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config error: {path}{where}: invalid YAML") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config error: {path}: expected a mapping of sections at the top level")
        tree, source = merge_trees(tree, loaded), path
    if overrides:
        tree = merge_trees(tree, parse_overrides(overrides))
        source = f"{source} + command line"
    cfg = build_config(tree, source)
    return for_stage(cfg, stage) if stage else cfg


def bundled_default(stage: str = "ppo") -> dict:
    """The toy run a stage uses when no --config is given (rlhf/configs/toy_<stage>.yaml, else toy_ppo.yaml)."""
    folder = Path(__file__).parents[1] / "configs"
    path = folder / f"toy_{stage}.yaml"
    return yaml.safe_load((path if path.exists() else folder / "toy_ppo.yaml").read_text())


def dump_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
