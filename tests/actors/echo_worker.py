"""A role worker with nothing to load, imported by Ray workers by module name: group mechanics without a model."""
import time

from actors.base import RoleWorker


class EchoWorker(RoleWorker):
    def setup(self) -> None:
        pass

    def stall(self, seconds: float) -> None:
        """A stuck worker (a peer that never answers)."""
        time.sleep(seconds)
