"""A role worker with nothing to load, imported by Ray workers by module name: group mechanics without a model."""
import time

from actors.base import RoleWorker


class EchoWorker(RoleWorker):
    def setup(self) -> None:
        pass

    def stall(self, seconds: float) -> None:
        """A stuck worker (a peer that never answers)."""
        time.sleep(seconds)

    def received(self, pieces: list) -> list:
        """The rows this rank was sent (a tensor batch's block, joined from its pieces)."""
        return self.rows(pieces).tolist()

    def own(self, rows: int) -> list:
        """A tensor put into the object store by this worker (which owns it), wrapped so the caller gets the ref
        (large enough to live in the shared store, not inline)."""
        import ray
        import torch

        return [ray.put(torch.zeros(rows))]
