"""Placement of role actors with Ray placement groups; roles that colocate share the bundles of one group."""
from __future__ import annotations

import ray
from ray.util.placement_group import placement_group, remove_placement_group

from rlhf.placement_rules import bundle_demand, capacity_problem


class PlacementError(RuntimeError):
    """The cluster cannot hold what the config asks for."""


def create_placement_groups(resources: dict, timeout_s: float = 60.0) -> dict:
    """role -> placement group. One group per colocation set; each bundle holds one actor of every member role.
    A request the cluster can never hold fails at once (`capacity_problem`); one that may fit once other work
    frees resources waits up to `timeout_s`. On any failure the groups already made are removed first."""
    demand = bundle_demand(resources)
    problem = capacity_problem(demand, ray.cluster_resources(), [n["Resources"] for n in ray.nodes() if n["Alive"]])
    if problem:
        raise PlacementError(problem)
    groups: dict = {}
    try:
        for members, bundle, count in demand:
            names = members.split("+")
            anchor = next(r for r in names if resources[r].colocate_with not in names)
            strategy = resources[anchor].strategy.upper()                  # the anchor's: PACK or SPREAD
            group = placement_group([dict(bundle) for _ in range(count)], strategy=strategy)
            for role in members.split("+"):
                groups[role] = group
            try:
                ray.get(group.ready(), timeout=timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise PlacementError(
                    f"roles {members} need {count} bundle(s) of {bundle} but the cluster "
                    f"({ray.available_resources()} free now) could not place them within {timeout_s:.0f} s; lower "
                    f"actors.*.num_actors or per-actor resources, or wait for other work to finish") from None
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
