"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") through PEFT: adapters added to a
model so that only they train, and the model's weights as a plain model holds them, W' = W + (alpha / r) B A per
adapted layer under the base model's parameter names. That merged view is what weight sync sends to the rollout
actors and what an export writes beside the adapter; it is computed per tensor, so under ZeRO-3 a caller gathers
only the few tensors one merged weight needs."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

PEFT_PREFIX = "base_model.model."


class LoraError(ValueError):
    """A LoRA setting the model cannot take, worded as one line that names the key."""


def scalar_head_name(model: nn.Module) -> str | None:
    """The attribute holding a scalar-head model's head (transformers names it 'score' or 'classifier')."""
    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), nn.Linear):
            return name
    return None


def add_adapters(model: nn.Module, settings, key: str = "model.lora") -> nn.Module:
    """`model` wrapped by PEFT with LoRA adapters per `settings` (`model.lora`): the base frozen, the adapters
    trainable and, on a scalar-head model (the value model), the head trainable in full and without an adapter."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    head = scalar_head_name(model)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, exclude_modules=[head] if head else None)
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as error:
        raise LoraError(f"{key}.target_modules: {(str(error).splitlines() or [''])[0]}") from None
    from peft.tuners.lora import Linear as LoraLinear

    own_weights = {name for name, _ in wrapped.named_parameters()}     # a tied weight is listed once, elsewhere
    for name, module in wrapped.named_modules():
        if isinstance(module, LoraLayer) and not isinstance(module, LoraLinear):
            raise LoraError(f"{key}.target_modules: {plain_name(name)} is a {type(module.get_base_layer()).__name__}"
                            "; adapters go on linear layers only")
        if isinstance(module, LoraLayer) and f"{name}.base_layer.weight" not in own_weights:
            raise LoraError(f"{key}.target_modules: {plain_name(name)} shares its weight with another layer (tied "
                            "embeddings): an adapter there cannot be merged into one weight; leave it out")
    if head:
        for param in getattr(wrapped.get_base_model(), head).parameters():
            param.requires_grad_(True)
    return wrapped


def is_lora(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def plain_model(model: nn.Module) -> nn.Module:
    """The transformers model inside (itself when `model` has no adapters)."""
    return model.get_base_model() if is_lora(model) else model


@contextlib.contextmanager
def adapters_off(model: nn.Module):
    """The base model's function for the duration: the initial policy, LoRA's reference for free."""
    with model.disable_adapter():
        yield


def adapter_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---- the merged view ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightSource:
    """One tensor of the plain model: `name` as the plain model (rollout, export) calls it, made from the trained
    module's parameters `params`: a copy of params[0], or with `scaling` set, W + scaling * (B @ A) from
    (W, A, B) = params (transposed for layers that store W as (in, out), GPT-2's Conv1D)."""

    name: str
    params: tuple[str, ...]
    scaling: float | None = None
    transposed: bool = False


def plain_name(name: str) -> str:
    """A PEFT parameter name as the plain model calls it ('base_model.model.x.q_proj.base_layer.weight' ->
    'x.q_proj.weight')."""
    return name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")


def weight_sources(model: nn.Module) -> list[WeightSource]:
    """Every tensor of the plain model, in parameter order, and what it is made from."""
    if not is_lora(model):
        return [WeightSource(name, (name,)) for name, _ in model.named_parameters()]
    from peft.tuners.lora import LoraLayer

    adapted = {}
    for module_name, module in model.named_modules():
        if isinstance(module, LoraLayer) and module.active_adapters:
            adapter = module.active_adapters[0]
            adapted[f"{module_name}.base_layer.weight"] = (
                f"{module_name}.lora_A.{adapter}.weight", f"{module_name}.lora_B.{adapter}.weight",
                module.scaling[adapter], bool(module.fan_in_fan_out))
    sources = []
    for name, _ in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        if name in adapted:
            a, b, scaling, transposed = adapted[name]
            sources.append(WeightSource(plain_name(name), (name, a, b), scaling, transposed))
        else:
            sources.append(WeightSource(plain_name(name), (name,)))
    return sources


def materialize(source: WeightSource, tensors: list[torch.Tensor]) -> torch.Tensor:
    """The plain model's tensor from the (full, gathered) `tensors` of `source.params`; never a view of them."""
    if source.scaling is None:
        return tensors[0].detach().clone()
    weight, a, b = (t.detach() for t in tensors)
    delta = (b.to(weight.dtype) @ a.to(weight.dtype)).mul_(source.scaling)
    return weight + (delta.T if source.transposed else delta)


def adapter_state(model: nn.Module, state_dict: dict) -> dict:
    """The adapter's tensors (PEFT's saved names) out of the module's full `state_dict`."""
    from peft import get_peft_model_state_dict

    return {name: tensor.detach().cpu().clone()
            for name, tensor in get_peft_model_state_dict(model, state_dict=state_dict).items()}
