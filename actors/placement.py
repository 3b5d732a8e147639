"""Placement of role actors with Ray placement groups; roles that colocate share the bundles of one group."""
from __future__ import annotations

import ray
from ray.util.placement_group import placement_group, remove_placement_group


class PlacementError(RuntimeError):
    """The cluster cannot hold what the config asks for."""


def colocation_sets(actors_cfg, roles: list[str]) -> dict[str, list[str]]:
    """anchor role -> the roles placed on its bundles (itself first)."""
    sets: dict[str, list[str]] = {}
    for role in roles:
        anchor = getattr(actors_cfg, role).colocate_with or role
        sets.setdefault(anchor, []).append(role)
    return sets


def create_placement_groups(actors_cfg, roles: list[str], timeout_s: float = 60.0, strategy: str = "PACK") -> dict:
    """role -> placement group. One group per colocation set; each bundle holds one actor of every member role."""
    groups = {}
    for anchor, members in colocation_sets(actors_cfg, roles).items():
        cpus = sum(getattr(actors_cfg, r).num_cpus for r in members)
        gpus = sum(getattr(actors_cfg, r).num_gpus for r in members)
        bundle = {"CPU": cpus} if cpus > 0 else {"CPU": 0.01}
        if gpus > 0:
            bundle["GPU"] = gpus
        count = getattr(actors_cfg, anchor).num_actors
        group = placement_group([dict(bundle) for _ in range(count)], strategy=strategy)
        try:
            ray.get(group.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(group)
            raise PlacementError(
                f"roles {'+'.join(members)} need {count} bundle(s) of {bundle} but the cluster "
                f"({ray.cluster_resources()}) could not place them within {timeout_s:.0f} s; lower actors.*.num_actors "
                f"or per-actor resources") from None
        for role in members:
            groups[role] = group
    return groups


def remove_groups(groups: dict) -> None:
    for group in {id(g): g for g in groups.values()}.values():
        remove_placement_group(group)
