"""Will the plan fit? Each role's memory per rank, estimated from the model's config before any weight is built or
loaded (`meta` tensors only, the tiny model from its shape), against what this machine offers: host memory on a
CPU-only run, and on GPUs the memory of one device per rank (plus the host memory of what is offloaded). A plan
that cannot fit is refused before Ray starts, naming the numbers and the settings that would make it fit.

Per parameter (ZeRO paper, Rajbhandari et al. 2020, with DeepSpeed's own layout): weights and gradients in the
training dtype; Adam's two moments in fp32 plus an fp32 master copy (DeepSpeed keeps one at stage >= 1, and at
stage 0 in bf16). ZeRO stage 1 partitions the optimizer state over the ranks, 2 also the gradients, 3 also the
weights. Activations are not counted: they depend on the batch, and `rlhf bench --memory` measures them."""
from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
PER_ACTOR_OVERHEAD = {"host": 0.5 * GIB, "gpu": 1.0 * GIB}   # libraries per process; CUDA context and workspace


class MemoryPlanError(ValueError):
    """A plan that cannot fit, worded as one line."""


@dataclass(frozen=True)
class RoleMemory:
    role: str
    ranks: int
    device: dict        # bytes per rank on the rank's device (host memory on CPU)
    host: dict          # bytes per rank that stay on the host on a GPU run (offloaded)

    @property
    def device_total(self) -> float:
        return sum(self.device.values())

    @property
    def host_total(self) -> float:
        return sum(self.host.values())

    @property
    def total(self) -> float:
        return self.device_total + self.host_total


def trainable_memory(role: str, params: int, element_bytes: int, ranks: int, zero,
                     trainable: int | None = None) -> RoleMemory:
    """Weights, gradients and optimizer state per rank of a ZeRO engine (`zero`: ZeroSettings). Of the `params`
    weights only `trainable` (default: all; with LoRA: the adapters) carry gradients and optimizer state."""
    trainable = params if trainable is None else trainable
    stage = zero.zero_stage
    share = lambda from_stage: 1 / ranks if stage >= from_stage else 1.0
    master = 4 if stage >= 1 or element_bytes == 2 else 0
    parts = {"weights": params * element_bytes * share(3), "gradients": trainable * element_bytes * share(2),
             "optimizer": trainable * (8 + master) * share(1)}
    host = {}
    if zero.offload_optimizer:
        host["optimizer"] = parts.pop("optimizer")
    if zero.offload_params:
        host["weights"] = parts.pop("weights")
    return RoleMemory(role, ranks, parts, host)


def frozen_memory(role: str, params: int, element_bytes: int, ranks: int, sharded: bool) -> RoleMemory:
    return RoleMemory(role, ranks, {"weights": params * element_bytes / (ranks if sharded else 1)}, {})


def meta_model(source: str, scalar_head: bool, tiny=None, key: str = "model", lora=None):
    """The model at `source` (an HF folder or hub name, or 'tiny' with its `tiny` shape) built on the `meta`
    device from its config, with `lora` adapters added when given: nothing is allocated and nothing is written.
    Errors name `key` (and a LoRA target that matches nothing is refused here, before any actor starts)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification

    from .models import ModelLoadError, quiet_transformers, resolve_model_path, tiny_config

    quiet_transformers()
    if source == "tiny":
        shape = (tiny.num_layers, tiny.hidden_size, tiny.num_heads) if tiny else (2, 64, 4)
        config = tiny_config(*shape)
    else:
        path = resolve_model_path(source, "", None, key)        # a missing folder is named as such
        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{key}: cannot read the model config of {source!r}: "
                                 f"{(str(error).splitlines() or [''])[0]}") from None
    if scalar_head:
        config.num_labels = 1
    with torch.device("meta"):
        model = (AutoModelForTokenClassification if scalar_head else AutoModelForCausalLM).from_config(config)
        if lora is not None:
            from .lora import add_adapters

            model = add_adapters(model, lora)
    return model


def count_parameters(source: str, scalar_head: bool, tiny=None, key: str = "model", lora=None) -> tuple[int, int]:
    """(parameters, trainable parameters) of `meta_model(...)`: tied weights count once; with `lora` only the
    adapters (and a scalar head) train."""
    model = meta_model(source, scalar_head, tiny, key, lora)
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


def describe(plan: list[RoleMemory], where: str) -> str:
    parts = []
    for role in plan:
        items = role.device if where == "device" else role.host
        if items:
            detail = ", ".join(f"{k} {v / GIB:.2f}" for k, v in items.items())
            parts.append(f"{role.role} {role.ranks} x ({detail})")
    return "; ".join(parts)


def check_fits(plan: list[RoleMemory], host_bytes: float, gpu_bytes: float | None, gpu_roles: set[str],
               fixes: str) -> None:
    """Refuse `plan` if it cannot fit. `gpu_bytes`: memory of one GPU, or None on a CPU-only run (then everything
    is host memory); `gpu_roles`: the roles whose ranks each have a GPU."""
    if gpu_bytes is None:
        need = sum(r.ranks * (r.total + PER_ACTOR_OVERHEAD["host"]) for r in plan)
        if need > host_bytes:
            raise MemoryPlanError(
                f"memory: this plan needs about {need / GIB:.1f} GiB of host memory before activations "
                f"({describe(plan, 'device')}; GiB per rank, plus {PER_ACTOR_OVERHEAD['host'] / GIB:.1f} per actor) "
                f"but this machine has {host_bytes / GIB:.1f} GiB available; {fixes}")
        return
    for role in plan:
        if role.role in gpu_roles:
            need = role.device_total + PER_ACTOR_OVERHEAD["gpu"]
            if need > gpu_bytes:
                raise MemoryPlanError(
                    f"memory: each {role.role} rank needs about {need / GIB:.1f} GiB of GPU memory before "
                    f"activations ({describe([role], 'device')} GiB, plus {PER_ACTOR_OVERHEAD['gpu'] / GIB:.1f} per "
                    f"actor) but a GPU here has {gpu_bytes / GIB:.1f} GiB; {fixes}")
    host_need = sum(r.ranks * (r.host_total + PER_ACTOR_OVERHEAD["host"]
                               + (0 if r.role in gpu_roles else r.device_total)) for r in plan)
    if host_need > host_bytes:
        raise MemoryPlanError(f"memory: this plan needs about {host_need / GIB:.1f} GiB of host memory (offloaded "
                              f"state: {describe(plan, 'host') or 'none'}) but this machine has "
                              f"{host_bytes / GIB:.1f} GiB available; {fixes}")


def dtype_bytes(cfg) -> int:
    """Bytes of one weight in the training dtype ('auto': bf16 where this machine has a GPU, else fp32)."""
    import torch

    from .models import torch_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch_dtype(cfg.precision.dtype, device).itemsize


def stage_plan(cfg, stage: str) -> list[RoleMemory]:
    """The roles `stage` ('ppo', 'sft', 'rm') starts, each with the model it loads (`model_sources`; no path is
    resolved: a 'tiny' model is counted from its shape, not made)."""
    from .config import STAGE_ROLES, engine_settings, model_sources

    element, sharded = dtype_bytes(cfg), cfg.deepspeed.frozen_zero_stage == 3
    counted = {}
    plan = []
    for role, source in model_sources(cfg, stage).items():
        owner = stage if stage in STAGE_ROLES else role
        settings = engine_settings(cfg, owner) if owner in ("policy", "value") or stage in STAGE_ROLES else None
        lora = settings.lora if settings else None
        key = (source.name, source.scalar_head, lora is not None)
        if key not in counted:
            counted[key] = count_parameters(source.name, source.scalar_head, cfg.model.tiny, source.key, lora)
        (params, trainable), ranks = counted[key], getattr(cfg.actors, role).num_actors
        if settings:
            plan.append(trainable_memory(owner, params, element, ranks, settings.zero, trainable))
        else:   # the rollout actors hold a whole replica; reference and reward are sharded under frozen ZeRO-3
            plan.append(frozen_memory(role, params, element, ranks, sharded and role != "rollout"))
    return plan


def fixes(stage: str) -> str:
    """The settings that make a `stage` plan smaller, named as the config names them."""
    from .config import STAGE_ROLES

    if stage in STAGE_ROLES:
        return (f"to fit: raise {stage}.deepspeed.zero_stage (3 shards everything), add "
                f"actors.{STAGE_ROLES[stage]}.num_actors, set {stage}.deepspeed.offload_optimizer, or a smaller model")
    return ("to fit: raise deepspeed.policy.zero_stage / deepspeed.value.zero_stage (3 shards everything), add "
            "actors.*.num_actors, set offload_optimizer, deepspeed.frozen_zero_stage 3, or a smaller model")


def check_stage_fits(cfg, stage: str) -> list[RoleMemory]:
    """Refuse a `stage` plan that cannot fit on this machine (a run on an attached cluster is not checked here:
    its nodes are not this machine). Returns the plan."""
    plan = stage_plan(cfg, stage)
    if cfg.cluster_address:
        return plan
    import psutil
    import torch

    from .config import STAGE_ROLES

    actors = lambda name: getattr(cfg.actors, STAGE_ROLES.get(name, name))     # SFT and RM run on a role's actors
    gpu_roles = {r.role for r in plan if actors(r.role).num_gpus > 0}
    gpu_bytes = torch.cuda.get_device_properties(0).total_memory if gpu_roles and torch.cuda.is_available() else None
    if gpu_roles and gpu_bytes is None:
        return plan          # GPUs asked for on a machine without: placement will say so
    check_fits(plan, psutil.virtual_memory().available, gpu_bytes, gpu_roles, fixes(stage))
    return plan
