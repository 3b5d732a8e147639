"""The rules of each stage (only its own: an SFT run is not refused over a PPO batch size), the run name it
defaults to, and the settings each trainable engine is built from."""
from __future__ import annotations

from dataclasses import dataclass

from ..optim import lr_schedule
from ..placement_rules import gpu_placement_problem
from .lora import LoraSettings
from .schema import ADVANTAGE_ESTIMATORS, Config, ConfigError, ZeroSettings


class StageConfigError(ValueError):
    pass


def _stage_fail(key: str, message: str):
    raise StageConfigError(f"[{key}] {message}")


def check_reward_source(cfg: Config) -> None:
    r = cfg.reward
    if (r.function is None) == (r.model is None):
        _stage_fail("reward.function", "set exactly one of reward.function and reward.model")
    if r.function is not None and ":" not in r.function:
        _stage_fail("reward.function", f"expected 'module:function', got {r.function!r}")


def check_ppo(cfg: Config) -> None:
    """Rules of a PPO run: a reward source, batch sizes that divide over minibatches and actors, colocation."""
    p = cfg.ppo
    check_reward_source(cfg)
    needed = ADVANTAGE_ESTIMATORS[p.advantage_estimator].min_group_size
    if cfg.rollout.n_samples_per_prompt < needed:
        _stage_fail("rollout.n_samples_per_prompt", f"{p.advantage_estimator} needs >= {needed} samples per prompt")
    if p.init_value_from_reward and cfg.reward.model is None:
        _stage_fail("ppo.init_value_from_reward", "needs reward.model (a scalar-head model to copy)")
    if p.ptx_coef > 0 and cfg.data.ptx is None:
        _stage_fail("ppo.ptx_coef", "ptx_coef > 0 needs data.ptx (the pretraining text data)")
    batch = cfg.rollout_batch_size
    if batch % p.num_minibatches:
        _stage_fail("ppo.num_minibatches", f"rollout batch {batch} (prompts_per_step x n_samples_per_prompt) "
                    f"is not divisible by {p.num_minibatches} minibatches")
    minibatch = batch // p.num_minibatches
    for role in ["policy"] + (["value"] if cfg.uses_critic else []):
        actors = getattr(cfg.actors, role).num_actors
        micro = getattr(cfg.deepspeed, role).micro_batch_size
        if minibatch % (actors * micro):
            _stage_fail(f"deepspeed.{role}.micro_batch_size", f"minibatch {minibatch} is not divisible by "
                        f"{actors} {role} actors x micro batch {micro}")
    if cfg.reference_in_policy and cfg.model.reference not in (None, cfg.model.policy):
        _stage_fail("model.lora.reference_from_policy", f"the policy with its adapters off is model.policy "
                    f"({cfg.model.policy!r}), not model.reference ({cfg.model.reference!r}): unset model.reference "
                    "or set model.lora.reference_from_policy false")
    for role in [r for r in ("reference", "reward") if r in cfg.active_roles()]:
        actors = getattr(cfg.actors, role).num_actors
        if batch % actors:
            _stage_fail(f"actors.{role}.num_actors", f"rollout batch {batch} is not divisible by {actors} actors")
    if cfg.rollout.prompts_per_step < cfg.actors.rollout.num_actors:
        _stage_fail("actors.rollout.num_actors", f"{cfg.actors.rollout.num_actors} rollout actors for "
                    f"{cfg.rollout.prompts_per_step} prompts per step (rollout.prompts_per_step): some would be idle")
    if cfg.data.ptx is not None and p.ptx_coef > 0 and cfg.data.ptx_batch_size % cfg.actors.policy.num_actors:
        _stage_fail("data.ptx_batch_size", f"not divisible by {cfg.actors.policy.num_actors} policy actors")
    active = cfg.active_roles()
    for role in active:
        target = getattr(cfg.actors, role).colocate_with
        if target is None:
            continue
        key = f"actors.{role}.colocate_with"
        if target not in active or target == role:
            _stage_fail(key, f"{target!r} is not another active role (one of "
                        f"{', '.join(x for x in active if x != role)})")
        if getattr(cfg.actors, target).colocate_with is not None:
            _stage_fail(key, f"{target!r} is itself colocated; point at the role it is colocated with")
        if getattr(cfg.actors, target).num_actors != getattr(cfg.actors, role).num_actors:
            _stage_fail(key, f"colocated roles need the same num_actors as {target!r}")
    problem = gpu_placement_problem(cfg, active)
    if problem:
        _stage_fail(*problem)


def _check_supervised(cfg: Config, name: str, role: str) -> None:
    section, actors = getattr(cfg, name), getattr(cfg.actors, role).num_actors
    if section.batch_size % (actors * section.micro_batch_size):
        _stage_fail(f"{name}.micro_batch_size", f"batch_size {section.batch_size} is not divisible by {actors} "
                    f"{role} actors x micro batch {section.micro_batch_size}")


def check_sft(cfg: Config) -> None:
    _check_supervised(cfg, "sft", "policy")
    if cfg.sft.select_by == "reward":
        check_reward_source(cfg)


def check_rm(cfg: Config) -> None:
    _check_supervised(cfg, "rm", "reward")


# the pipeline checks each of its three stage configs (as it will run them) before its first stage starts
STAGE_CHECKS = {"ppo": [check_ppo], "sft": [check_sft], "rm": [check_rm], "pipeline": [], "critic": []}


def for_stage(cfg: Config, stage: str) -> Config:
    """`cfg` checked by the rules of `stage` (only those: an SFT run is not refused over a PPO batch size), with
    `run.name` defaulting to '<stage>-default'. Every driver starts with this, before any actor starts."""
    for check in STAGE_CHECKS[stage]:
        try:
            check(cfg)
        except StageConfigError as error:
            key, _, message = str(error)[1:].partition("] ")
            raise ConfigError(f"config error for rlhf {stage}: {key}: {message}") from None
    if cfg.run.name is None:
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": f"{stage}-default"})})
    return cfg


@dataclass(frozen=True)
class EngineSettings:
    """Everything one trainable DeepSpeed engine is built from, whichever stage owns it."""

    lr: float
    weight_decay: float
    warmup_steps: int
    max_grad_norm: float
    zero: ZeroSettings
    micro_batch_size: int
    minibatch_size: int   # global rows per optimizer step
    lora: LoraSettings | None = None   # adapters instead of full fine-tuning (PPO's policy, its value model if asked)
    lr_schedule: str = "constant"      # after the warmup (`rlhf.optim.lr_schedule`)
    min_lr_ratio: float = 0.1
    total_steps: int = 0               # optimizer steps of the whole run (0: not known, only for 'constant')

    def lr_multiplier(self):
        """The LR multiplier per optimizer step these settings give (`rlhf.optim.lr_schedule`)."""
        return lr_schedule(self.warmup_steps, self.lr_schedule, self.total_steps, self.min_lr_ratio)


def engine_settings(cfg: Config, owner: str, total_steps: int = 0) -> EngineSettings:
    """The settings of PPO's 'policy' or 'value' engine, or of the 'sft' or 'rm' stage's engine: each from its
    own section, never another stage's. PPO's optimizer steps follow from the config; a supervised stage's depend
    on its data, so its driver passes `total_steps`."""
    if owner in ("policy", "value"):
        p, ds, lora = cfg.ppo, getattr(cfg.deepspeed, owner), cfg.model.lora
        adapters = lora if lora.enabled and (owner == "policy" or lora.value) else None
        return EngineSettings(p.policy_lr if owner == "policy" else p.value_lr, p.weight_decay, p.warmup_steps,
                              p.max_grad_norm, ds, ds.micro_batch_size, cfg.rollout_batch_size // p.num_minibatches,
                              adapters, p.lr_schedule, p.min_lr_ratio,
                              cfg.run.num_steps * p.ppo_epochs * p.num_minibatches)
    section = getattr(cfg, owner)
    return EngineSettings(section.lr, section.weight_decay, section.warmup_steps, section.max_grad_norm,
                          section.deepspeed, section.micro_batch_size, section.batch_size, None,
                          section.lr_schedule, section.min_lr_ratio, total_steps)



# whose actors (and `actors.<role>` resources) the supervised stages use
STAGE_ROLES = {"sft": "policy", "rm": "reward"}


@dataclass(frozen=True)
class ModelSource:
    """The model a role loads: its name or path as the config gives it, the key that gave it (for errors), and
    whether it carries a scalar head (reward and value models)."""

    name: str
    key: str
    scalar_head: bool


def model_sources(cfg: Config, stage: str) -> dict[str, ModelSource]:
    """role -> the model it loads in `stage` ('ppo', 'sft', 'rm'): the one place that decides, for the drivers that
    resolve the paths and for the memory plan that sizes them."""
    policy = ModelSource(cfg.model.policy, "model.policy", False)
    if stage == "sft":
        return {"policy": policy}
    if stage == "rm":
        base = ModelSource(cfg.rm.base, "rm.base", True) if cfg.rm.base else ModelSource(policy.name, policy.key, True)
        return {"reward": base}
    sources = {"policy": policy, "rollout": policy}
    if not cfg.reference_in_policy:
        sources["reference"] = (ModelSource(cfg.model.reference, "model.reference", False) if cfg.model.reference
                                else policy)
    if cfg.reward.model is not None:
        sources["reward"] = ModelSource(cfg.reward.model, "reward.model", True)
    if cfg.uses_critic:
        value = ((cfg.model.value, "model.value") if cfg.model.value else
                 (cfg.reward.model, "reward.model") if cfg.ppo.init_value_from_reward else
                 (cfg.model.policy, "model.policy"))
        sources["value"] = ModelSource(*value, True)
    return sources
