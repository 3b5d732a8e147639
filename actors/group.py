"""A group of N workers of one role: placed on a placement group, started with ranks, called all at once,
results gathered in rank order, and torn down (or recreated) as one."""
from __future__ import annotations

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


class ActorGroup:
    def __init__(self, worker_cls, role: str, resources, placement, config: dict, distributed: bool):
        self.role, self.worker_cls, self.resources = role, worker_cls, resources
        self.placement, self.config, self.distributed = placement, config, distributed
        self.actors: list = []
        self.start()

    def start(self) -> None:
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
        if self.distributed:
            host, port = ray.get(self.actors[0].address.remote())
            ray.get([actor.init_distributed.remote(host, port) for actor in self.actors])

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
