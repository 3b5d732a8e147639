"""Placement of role actors with Ray placement groups; roles that colocate share the bundles of one group."""
from __future__ import annotations

import ray
from ray.util.placement_group import placement_group, remove_placement_group

from rlhf.placement_rules import colocation_sets


class PlacementError(RuntimeError):
    """The cluster cannot hold what the config asks for."""


def create_placement_groups(resources: dict, timeout_s: float = 60.0, strategy: str = "PACK") -> dict:
    """role -> placement group. One group per colocation set; each bundle holds one actor of every member role.
    If any group cannot be placed in time, the groups already made are removed before the error is raised."""
    groups: dict = {}
    try:
        for anchor, members in colocation_sets(resources).items():
            cpus = sum(resources[r].num_cpus for r in members)
            gpus = sum(resources[r].num_gpus for r in members)
            bundle = {"CPU": cpus} if cpus > 0 else {"CPU": 0.01}
            if gpus > 0:
                bundle["GPU"] = gpus
            count = resources[anchor].num_actors
            group = placement_group([dict(bundle) for _ in range(count)], strategy=strategy)
            for role in members:
                groups[role] = group
            try:
                ray.get(group.ready(), timeout=timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise PlacementError(
                    f"roles {'+'.join(members)} need {count} bundle(s) of {bundle} but the cluster "
                    f"({ray.cluster_resources()}) could not place them within {timeout_s:.0f} s; lower "
                    f"actors.*.num_actors or per-actor resources") from None
    except BaseException:
        remove_groups(groups)
        raise
    return groups


def remove_groups(groups: dict) -> None:
    for group in {id(g): g for g in groups.values()}.values():
        try:
            remove_placement_group(group)
        except Exception:   # already removed, or the cluster is gone: nothing left to free
            pass
