"""A group of N workers of one role: placed on a placement group, started with ranks, called all at once,
results gathered in rank order, and torn down (or recreated) as one."""
from __future__ import annotations

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


class ActorGroup:
    def __init__(self, worker_cls, role: str, resources, placement, config: dict, distributed: bool,
                 connect: bool = True):
        """`connect=False` leaves the torch.distributed rendezvous to `connect_groups`, so that several groups
        start their processes at the same time."""
        self.role, self.worker_cls, self.resources = role, worker_cls, resources
        self.placement, self.config, self.distributed = placement, config, distributed
        self.actors: list = []
        self.start(connect)

    def start(self, connect: bool = True) -> None:
        """Create the workers (and their torch.distributed group when the role needs one)."""
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
        if connect:
            connect_groups([self])

    def call(self, method: str, *args, **kwargs) -> list:
        """Invoke `method` on every worker with the same arguments; returns the futures in rank order."""
        return [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors]

    def run(self, method: str, *args, **kwargs) -> list:
        """`call`, then wait for all results."""
        return ray.get(self.call(method, *args, **kwargs))

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def restart(self) -> None:
        """Tear the workers down and start them again on the same placement (state must be reloaded)."""
        self.shutdown()
        self.start()

    def __len__(self) -> int:
        return len(self.actors)


def connect_groups(groups: list[ActorGroup]) -> None:
    """Form the torch.distributed group of every role that needs one, all roles at once."""
    distributed = [g for g in groups if g.distributed]
    addresses = ray.get([g.actors[0].address.remote() for g in distributed])
    ray.get([actor.init_distributed.remote(host, port)
             for g, (host, port) in zip(distributed, addresses) for actor in g.actors])
