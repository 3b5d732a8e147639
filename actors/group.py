"""The one way every stage runs actors. `ActorGroup` is N workers of one role: started with ranks on a placement
group, called all at once, results gathered in rank order (a worker's own exception surfaces with its role and
rank). `RoleGroups` is all the groups of one run (PPO, an SFT or reward-model stage, an evaluator): placed, started,
connected and set up together; if anything fails while starting, or when the run ends, every actor and placement
group it created is removed, also when the Ray cluster outlives the run."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlhf.placement_rules import phase_shares, planned_threads
from rlhf.sharding import pad_rows, shard

from .placement import create_placement_groups, remove_groups


class RoleError(RuntimeError):
    """A failure inside a role actor that is not one of the system's own one-line errors."""


class ActorDiedError(RoleError):
    """A role actor's process (or its node) is gone: the group can be recreated on its placement."""

    def __init__(self, message: str, role: str, rank: int):
        super().__init__(message)
        self.role, self.rank = role, rank


class ResultsLost(RuntimeError):
    """Objects a call returned (a step's samples) are gone from the object store with their node."""


@dataclass
class Calls:
    """Pending results of one method called on every worker of a group, in rank order."""

    role: str
    method: str
    futures: list
    timeout_s: float | None = None     # the group's phase deadline (`run.phase_timeout_s`)


def _worker_error(error: Exception, role: str, rank: int, method: str) -> Exception:
    """The worker's own exception, same type, its message prefixed with where it happened (or a RoleError)."""
    where = f"{role} actor {rank} ({method})"
    if isinstance(error, RayActorError):
        return ActorDiedError(f"{where}: the actor died ({str(error).strip().splitlines()[0]})", role, rank)
    cause = getattr(error, "cause", None)
    if isinstance(cause, Exception) and not isinstance(cause, RayTaskError):
        try:
            same_type = type(cause)(f"{where}: {cause}")
            if str(same_type) == f"{where}: {cause}":
                return same_type
        except Exception:
            pass
        return RoleError(f"{where}: {type(cause).__name__}: {cause}")
    return RoleError(f"{where}: {str(error).strip().splitlines()[-1]}")


def gather_all(*calls: Calls, timeout_s: float | None = None) -> list[list]:
    """Wait for every call; returns one list of results per call, in rank order. The first worker to fail stops the
    wait (its peers may be blocked in a collective with it) and its exception is raised, naming role and rank.
    The deadline is `timeout_s`, else the shortest of the calls' own (their group's `run.phase_timeout_s`)."""
    owner = {future: (c.role, rank, c.method) for c in calls for rank, future in enumerate(c.futures)}
    remaining = list(owner)
    if timeout_s is None:
        timeout_s = min((c.timeout_s for c in calls if c.timeout_s is not None), default=None)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while remaining:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, remaining = ray.wait(remaining, num_returns=1, timeout=wait)
        if not ready:
            late = sorted({f"{role} actor {rank} ({method})" for role, rank, method in map(owner.get, remaining)})
            raise RoleError(f"no answer within {timeout_s:.0f} s from {', '.join(late)}")
        try:
            ray.get(ready[0])
        except (RayTaskError, RayActorError) as error:
            raise _worker_error(error, *owner[ready[0]]) from error
        except ObjectLostError as error:
            role, rank, method = owner[ready[0]]
            raise ResultsLost(f"{role} actor {rank} ({method}): its result was lost with its node") from error
    return [ray.get(c.futures) for c in calls]


def gather(calls: Calls, timeout_s: float | None = None) -> list:
    return gather_all(calls, timeout_s=timeout_s)[0]


class ActorGroup:
    def __init__(self, worker_cls, role: str, resources, placement, config: dict, distributed: bool):
        """Start `resources.num_actors` workers on `placement`; `connect_groups` forms their torch.distributed
        group when `distributed` (after every group of the run has started, so their imports overlap). Every wait
        on them has the config's `run.phase_timeout_s` as its deadline."""
        self.role, self.worker_cls, self.resources = role, worker_cls, resources
        self.placement, self.config, self.distributed = placement, config, distributed
        self.timeout_s = config["run"]["phase_timeout_s"]
        self.nodes: list[str] = []      # each rank's node address, once it is up
        self.actors: list = []
        self.start()

    def start(self) -> None:
        count = self.resources.num_actors
        threads = max(1, int(self.resources.num_cpus))
        remote_cls = ray.remote(self.worker_cls)
        self.actors = [
            remote_cls.options(
                num_cpus=self.resources.num_cpus, num_gpus=self.resources.num_gpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=i),
            ).remote(self.config, self.role, i, count, threads)
            for i in range(count)
        ]

    def call(self, method: str, *args, **kwargs) -> Calls:
        """Invoke `method` on every worker with the same arguments (big arguments: pass one `ray.put` ref)."""
        return Calls(self.role, method, [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors],
                     self.timeout_s)

    def call_each(self, method: str, per_rank: list[tuple], num_returns: list[int] | None = None) -> Calls:
        """`method(*per_rank[rank])` on each worker. With `num_returns`, worker `rank` returns that many objects
        and its future is their list of references (nothing is fetched until someone reads them)."""
        futures = []
        for rank, (actor, args) in enumerate(zip(self.actors, per_rank, strict=True)):
            bound = getattr(actor, method)
            if num_returns is not None:
                bound = bound.options(num_returns=num_returns[rank])
            futures.append(bound.remote(*args))
        return Calls(self.role, method, futures, self.timeout_s)

    def shards(self, batch) -> list[list]:
        """`batch` cut into one contiguous block per worker (`rlhf.sharding`), each put into the object store once,
        as `call_shards` takes them: per rank, the references of its block's pieces (here one piece)."""
        return [[ray.put(shard(batch, rank, len(self.actors)))] for rank in range(len(self.actors))]

    def call_shards(self, method: str, shards: list[list], *args) -> Calls:
        """`method(pieces, *args)` on every worker, `pieces` the references of its own block only
        (`RoleWorker.rows` joins them): no worker receives another's rows."""
        return self.call_each(method, [(pieces, *args) for pieces in shards])

    def run_shards(self, method: str, batch, *args) -> list:
        """`call_shards` on `batch` (which splits evenly over the workers), then every result in rank order."""
        return gather(self.call_shards(method, self.shards(batch), *args))

    def run(self, method: str, *args, **kwargs) -> list:
        """`call`, then wait for every result (rank order)."""
        return gather(self.call(method, *args, **kwargs))

    def map_rows(self, method: str, batch, *args) -> Any:
        """`method(pieces, *args)` on every worker, each reading its block of `batch` and returning one result per
        row: the batch is padded to split evenly over the workers, and the padding's results are dropped."""
        import torch

        padded, real = pad_rows(batch, len(self.actors))
        return torch.cat(self.run_shards(method, padded, *args))[:real]

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def restart(self) -> None:
        """Tear the workers down and start them again on the same placement (state must be reloaded)."""
        self.shutdown()
        self.start()
        connect_groups([self])

    def node(self, rank: int) -> str:
        return self.nodes[rank] if rank < len(self.nodes) else "unknown"

    def __len__(self) -> int:
        return len(self.actors)


def connect_groups(groups) -> None:
    """Form the torch.distributed group of every role that needs one, all roles at once."""
    distributed = [g for g in groups if g.distributed]
    addresses = gather_all(*[Calls(g.role, "address", [g.actors[0].address.remote()], g.timeout_s)
                             for g in distributed])
    gather_all(*[g.call("init_distributed", host, port) for g, [(host, port)] in zip(distributed, addresses)])


class SharedFilesystemError(RuntimeError):
    """The run directory is not shared by the nodes that write checkpoints, worded as one line."""


def check_shared(run_dir, writers: list["ActorGroup"]) -> None:
    """Every rank of `writers` sees the run directory the driver reads; otherwise a one-line error says which
    does not and what to set."""
    probe = Path(run_dir) / f".shared-probe-{uuid.uuid4().hex[:8]}"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text("written by the driver\n")
    try:
        for group in writers:
            for rank, seen in enumerate(group.run("sees", str(probe))):
                if not seen:
                    raise SharedFilesystemError(
                        f"run.output_dir: {Path(run_dir).parent} is not visible from node {group.node(rank)} "
                        f"({group.role} actor {rank}), and every trainable rank writes its part of each checkpoint "
                        "there: put run.output_dir on a filesystem all nodes share (NFS, EFS, Lustre)")
    finally:
        probe.unlink(missing_ok=True)


@dataclass
class RoleSpec:
    """One role of a run: its worker class, the arguments of its `setup`, whether it forms a torch.distributed
    group, and its resources (None: the config's `actors.<role>`)."""

    role: str
    worker_cls: type
    setup_args: tuple = ()
    distributed: bool = False
    resources: Any = None


class RoleGroups:
    def __init__(self, cfg, specs: list[RoleSpec], shared_dir=None, writers: tuple = ()):
        """With `shared_dir`, the actors of the `writers` roles (each rank writes its part of every checkpoint)
        check they see that folder before any model is loaded (`check_shared`)."""
        self.cfg, self.specs = cfg, {s.role: s for s in specs}
        self.groups: dict[str, ActorGroup] = {}
        self.placements: dict = {}
        self.board_token = None           # names the run's phase boards once threads per phase are applied
        try:
            resources = {s.role: s.resources or getattr(cfg.actors, s.role) for s in specs}
            self.placements = create_placement_groups(resources, cfg.run.placement_timeout_s)
            config = cfg.model_dump(mode="json")
            for s in specs:
                self.groups[s.role] = ActorGroup(s.worker_cls, s.role, resources[s.role], self.placements[s.role],
                                                 config, s.distributed)
            for group, nodes in zip(self.groups.values(), gather_all(*[g.call("node") for g in self.groups.values()])):
                group.nodes = nodes
            if shared_dir is not None:
                check_shared(shared_dir, [self.groups[role] for role in writers if role in self.groups])
            connect_groups(self.groups.values())
            gather_all(*[self.groups[s.role].call("setup", *s.setup_args) for s in specs])
        except BaseException:
            self.shutdown()
            raise

    def apply_phase_threads(self, phase_roles: dict[str, tuple]) -> dict:
        """Each actor's torch threads in each phase (`rlhf.placement_rules.phase_shares`) of work that runs one
        phase after another, `phase_roles` naming who works in each; a local cluster the run started for itself
        is the run's whole machine. Within a phase, an actor whose node peers are done takes their cores between
        its micro-batches (`actors/phase_board.py`). Returns the plan while all work ({} with
        `actors.phase_threads: false`)."""
        if not self.cfg.actors.phase_threads:
            return {}
        cores = {}
        for group in self.groups.values():
            for node, count in zip(group.nodes, group.run("cores")):
                cores[node] = count
        actors = [(role, rank, node, group.resources.num_cpus)
                  for role, group in self.groups.items() for rank, node in enumerate(group.nodes)]
        shares = phase_shares(actors, cores, phase_roles, whole_nodes=self.cfg.cluster_address is None)
        self.board_token = self.board_token or uuid.uuid4().hex[:12]
        gather_all(*[group.call_each("set_phase_threads", [(shares.get((role, rank), {}), self.board_token)
                                                           for rank in range(len(group))])
                     for role, group in self.groups.items()])
        return planned_threads(shares)

    def recreate(self, role: str) -> None:
        """Kill every worker of `role`, start new ones on the same placement, connect and set them up (weights
        from their model path: a frozen role needs nothing else; the caller re-sends what changed since)."""
        group = self.groups[role]
        group.restart()
        gather(group.call("setup", *self.specs[role].setup_args))
        group.nodes = gather(group.call("node"))

    def dead_roles(self, settle_s: float = 0.0) -> dict[str, list[int]]:
        """role -> ranks of its workers whose process (or node) is gone, as the cluster's control store (GCS) says:
        a busy actor is not asked anything, so a long call cannot pass for a death; no dashboard is needed.
        When a whole node is lost, callers see its actors as unavailable before the GCS has declared the node
        dead (its health checks take seconds): with `settle_s`, ask again until a death shows or that time passes.
        Every rank on a node the GCS has declared dead counts as dead with it (it marks them one by one)."""
        from ray._private.state import actors as actor_table

        deadline = time.monotonic() + settle_s
        while True:
            entries = {(role, rank): actor_table(actor_id=actor._actor_id.hex()) or {}
                       for role, group in self.groups.items() for rank, actor in enumerate(group.actors)}
            gone = {key for key, entry in entries.items() if entry.get("State", "DEAD") == "DEAD"}
            if gone:
                # the control store marks a lost node's actors dead one by one: the others there are as lost
                node_of = lambda entry: (entry.get("Address") or {}).get("NodeID")
                lost_nodes = {node["NodeID"] for node in ray.nodes() if not node["Alive"]}
                lost_nodes &= {node_of(entries[key]) for key in gone}
                gone |= {key for key, entry in entries.items() if node_of(entry) in lost_nodes}
            if gone or time.monotonic() >= deadline:
                dead: dict[str, list[int]] = {}
                for role, rank in entries:          # roles in the run's order, ranks ascending
                    if (role, rank) in gone:
                        dead.setdefault(role, []).append(rank)
                return dead
            time.sleep(0.5)

    def __getitem__(self, role: str) -> ActorGroup:
        return self.groups[role]

    def get(self, role: str) -> ActorGroup | None:
        return self.groups.get(role)

    def shutdown(self) -> None:
        """Kill every actor and remove every placement group this run created (safe to call twice). The live
        actors first remove their phase-board markers (a lost actor's stays, for its successor to reuse)."""
        if self.board_token is not None:
            closing = [actor.close_phase_board.remote() for g in self.groups.values() for actor in g.actors]
            ray.wait(closing, num_returns=len(closing), timeout=10)
            self.board_token = None
        for group in self.groups.values():
            group.shutdown()
        remove_groups(self.placements)
        self.placements = {}

    def __enter__(self) -> "RoleGroups":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
