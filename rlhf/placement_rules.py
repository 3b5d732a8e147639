"""Which roles share placement bundles, the GPU placements that cannot work, and how many threads each actor runs
per phase (pure; Ray places them in `actors/placement.py`).
Two ranks of one NCCL communicator must never share a GPU: NCCL refuses a duplicate device."""
from __future__ import annotations

from dataclasses import dataclass


def colocation_sets(resources: dict) -> dict[str, list[str]]:
    """anchor role -> the roles placed on its bundles (itself first). `resources` maps role -> RoleResources; a
    `colocate_with` naming a role that is not started here is ignored (the role is placed on its own)."""
    sets: dict[str, list[str]] = {}
    for role, spec in resources.items():
        anchor = spec.colocate_with if spec.colocate_with in resources else role
        sets.setdefault(anchor, []).append(role)
    return sets


def bundle_demand(resources: dict) -> list[tuple[str, dict, int]]:
    """('role+role', bundle, count) per colocation set: one bundle per actor of the anchor role, holding one actor
    of every member role (a CPU-less bundle still takes 0.01 CPU: Ray needs a resource in each). The set is placed
    with its anchor's `strategy`."""
    demand = []
    for anchor, members in colocation_sets(resources).items():
        cpus = sum(resources[r].num_cpus for r in members)
        gpus = sum(resources[r].num_gpus for r in members)
        bundle = {"CPU": cpus} if cpus > 0 else {"CPU": 0.01}
        if gpus > 0:
            bundle["GPU"] = gpus
        demand.append(("+".join(members), bundle, resources[anchor].num_actors))
    return demand


def _fmt(resources: dict) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU") if k in resources or k == "CPU")


def capacity_problem(demand: list[tuple[str, dict, int]], totals: dict, nodes: list[dict]) -> str | None:
    """Why `demand` (`bundle_demand`) can never be placed on a cluster with resource `totals` and live `nodes`
    (each a resource dict), or None: a bundle no single node can hold, or more of a resource than the cluster has
    in all. What is merely busy now may free up: that is the placement timeout's business, not this check's."""
    for members, bundle, _ in demand:
        if not any(all(node.get(k, 0) >= v for k, v in bundle.items()) for node in nodes):
            largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
            return (f"roles {members} need bundles of {_fmt(bundle)} each, more than any node has (the largest: "
                    f"{_fmt(largest)}); lower their actors.*.num_cpus / num_gpus or stop colocating them")
    asked: dict = {}
    for _, bundle, count in demand:
        for key, value in bundle.items():
            asked[key] = asked.get(key, 0) + value * count
    if any(value > totals.get(key, 0) + 1e-9 for key, value in asked.items()):
        detail = "; ".join(f"{members} {count} x ({_fmt(bundle)})" for members, bundle, count in demand)
        return (f"the run asks for {_fmt(asked)} in all ({detail}) but the cluster has {_fmt(totals)} in all; "
                f"lower actors.*.num_actors or their num_cpus / num_gpus, or add nodes")
    return None


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


# the roles that work in each phase of a synchronous PPO step
PHASE_ROLES = {"generate": ("rollout",), "score": ("policy", "reference", "reward", "value"),
               "train": ("policy", "value")}


@dataclass(frozen=True)
class PhaseShare:
    """An actor's part of its node in one phase: the node's `budget` of threads for the run, its own `cpus`, and the
    (role, rank, cpus) of the phase's other actors on that node. The peers share the budget in proportion to their
    cpus; once some are done (`threads(done)`), those still working take the freed cores."""
    budget: float
    cpus: float
    peers: tuple = ()

    def threads(self, done=frozenset()) -> int:
        working = self.cpus + sum(cpus for role, rank, cpus in self.peers if (role, rank) not in done)
        share = self.budget * self.cpus / working if working > 0 else 0.0
        return max(1, int(self.cpus), int(share))


def phase_shares(actors: list[tuple[str, int, str, float]], node_cores: dict[str, int],
                 phase_roles: dict[str, tuple] = PHASE_ROLES, whole_nodes: bool = False) -> dict[tuple, dict]:
    """(role, rank) -> {phase: PhaseShare} for the phases its role works in (`phase_roles`, one after another:
    PPO's by default; a supervised stage's one group trains alone).

    `actors`: (role, rank, node, num_cpus) of every actor of the run; `node_cores`: the cores of each node. On a
    node the run may use what it reserved there (the sum of its actors' num_cpus), at most the node's cores; with
    `whole_nodes` (a local cluster the run started for itself) the node's cores; in a phase, the actors of that
    phase on the node share it in proportion to their num_cpus, each getting at least its own num_cpus (and at
    least 1). The phases run one after another, so nothing is oversubscribed; within a phase, an actor whose node
    peers are done takes their part (`PhaseShare.threads`)."""
    reserved: dict[str, float] = {}
    for _, _, node, cpus in actors:
        reserved[node] = reserved.get(node, 0.0) + cpus
    out: dict[tuple, dict] = {}
    for phase, roles in phase_roles.items():
        working = [a for a in actors if a[0] in roles]
        for role, rank, node, cpus in working:
            budget = node_cores[node] if whole_nodes else min(reserved[node], node_cores[node])
            peers = tuple((r, k, c) for r, k, n, c in working if n == node and (r, k) != (role, rank))
            out.setdefault((role, rank), {})[phase] = PhaseShare(budget, cpus, peers)
    return out


def planned_threads(shares: dict[tuple, dict]) -> dict[tuple, dict]:
    """`phase_shares`' threads while every actor of each phase works."""
    return {actor: {phase: share.threads() for phase, share in phases.items()} for actor, phases in shares.items()}
