"""Which roles share placement bundles, and the GPU placements that cannot work (pure; Ray places them in
`actors/placement.py`). Two ranks of one NCCL communicator must never share a GPU: NCCL refuses a duplicate device."""
from __future__ import annotations


def colocation_sets(resources: dict) -> dict[str, list[str]]:
    """anchor role -> the roles placed on its bundles (itself first). `resources` maps role -> RoleResources; a
    `colocate_with` naming a role that is not started here is ignored (the role is placed on its own)."""
    sets: dict[str, list[str]] = {}
    for role, spec in resources.items():
        anchor = spec.colocate_with if spec.colocate_with in resources else role
        sets.setdefault(anchor, []).append(role)
    return sets


def nccl_roles(cfg) -> set[str]:
    """The PPO roles whose actors are ranks of one NCCL group on GPUs: the trainable roles, frozen roles under
    ZeRO-3, and the rollout actors when the weights reach them over the collective (with the policy's rank 0)."""
    roles = {"policy", "value"}
    if cfg.deepspeed.frozen_zero_stage == 3:
        roles |= {"reference", "reward"}
    if cfg.rollout.weight_sync == "collective":
        roles.add("rollout")
    return roles


def gpu_placement_problem(cfg, roles: list[str]) -> tuple[str, str] | None:
    """(config key, what is wrong) for a GPU placement that would put two ranks of one NCCL group on one device,
    or None. A bundle with a fraction of a GPU can share its device with the next bundle of the same group."""
    resources = {role: getattr(cfg.actors, role) for role in roles}
    grouped = nccl_roles(cfg)
    for anchor, members in colocation_sets(resources).items():
        gpus = sum(resources[r].num_gpus for r in members)
        count = resources[anchor].num_actors
        in_group = [r for r in members if r in grouped]
        if 0 < gpus < 1 and count > 1 and in_group:
            return (f"actors.{anchor}.num_gpus", f"{'+'.join(members)} take {gpus:g} GPU per bundle over {count} "
                    f"bundles, so two ranks of {in_group[0]}'s NCCL group may share a GPU; give each bundle a "
                    f"whole GPU (num_gpus summing to 1 over the colocated roles)")
    if cfg.rollout.weight_sync == "collective" and {"policy", "rollout"} <= set(roles):
        shared = [r for r in ("policy", "rollout") if 0 < resources[r].num_gpus < 1]
        if shared:
            return (f"actors.{shared[0]}.num_gpus", f"{resources[shared[0]].num_gpus:g} GPU: with the collective "
                    "weight sync the policy's rank 0 and the rollout actors are one NCCL group, and a fraction of a "
                    "GPU lets two of them share a device; give policy and rollout actors whole GPUs, or use "
                    "rollout.weight_sync: object_store")
    return None
