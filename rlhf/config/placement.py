"""Where each role runs and how it is sharded: the `actors.<role>` resources and placement, and the DeepSpeed ZeRO
settings of the trainable and frozen roles (sections of the config schema, `schema.py`)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from .base import Section
from .base import fail as _fail


class RoleResources(Section):
    num_actors: int = Field(1, ge=1)
    """Ray actors of this role (data-parallel ranks for trainable roles)."""
    num_cpus: float = Field(1.0, ge=0)
    """CPUs reserved per actor; also its torch thread count (at least 1; more in a phase where others of the run wait:
    actors.phase_threads)."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs per actor (fractions let colocated roles share a GPU)."""
    colocate_with: Optional[str] = None
    """Place this role's actors in the placement-group bundles of another role (same devices)."""
    strategy: Literal["pack", "spread"] = "pack"
    """How Ray places this role's actors over nodes: 'pack' on as few nodes as possible (fast collectives),
    'spread' over as many as it can (one lost node takes fewer ranks). A colocated role follows its anchor's."""


class ActorsConfig(Section):
    policy: RoleResources = RoleResources()
    value: RoleResources = RoleResources()
    reference: RoleResources = RoleResources()
    reward: RoleResources = RoleResources()
    rollout: RoleResources = RoleResources()
    phase_threads: bool = True
    """Synchronous PPO runs its phases one after another (generate, score, train), a supervised stage's one group
    works alone, evaluation generates then scores: an actor working while others of the run on its node wait uses
    their reserved CPUs too (torch threads per phase, shared in proportion to num_cpus among the phase's actors on
    the node, at most the node's cores; on a local cluster the run started for itself, the node's cores); within a
    phase, once some of those actors are done, the others take their cores between micro-batches (so on CPU the
    last bits of a run can depend on timing: gradients on 1 and 2 threads differ at 1e-9). false: every actor
    always runs num_cpus threads (also what asynchronous mode does: there the phases overlap)."""


class ZeroSettings(Section):
    zero_stage: Literal[0, 1, 2, 3] = 0
    """DeepSpeed ZeRO stage."""
    offload_optimizer: bool = False
    """ZeRO optimizer-state offload to CPU (stage >= 1)."""
    offload_params: bool = False
    """ZeRO-3 parameter offload to CPU."""

    @model_validator(mode="after")
    def _check_offload(self):
        if self.offload_params and self.zero_stage != 3:
            _fail("offload_params", "parameter offload needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            _fail("offload_optimizer", "optimizer offload needs zero_stage >= 1")
        return self


class TrainableDeepSpeed(ZeroSettings):
    micro_batch_size: int = Field(8, ge=1)
    """Sequences per forward/backward on one actor; gradients accumulate up to the minibatch."""


class DeepSpeedConfig(Section):
    """DeepSpeed settings of PPO's roles (SFT and the reward model have theirs in `sft.deepspeed`, `rm.deepspeed`)."""

    policy: TrainableDeepSpeed = TrainableDeepSpeed()
    value: TrainableDeepSpeed = TrainableDeepSpeed()
    frozen_zero_stage: Literal[0, 3] = 0
    """Reference and reward models: 0 = full replica per actor, 3 = ZeRO-3 inference engine sharded over the role."""
    frozen_micro_batch_size: int = Field(16, ge=1)
    """Sequences per forward pass of the reference and reward models on one actor."""
