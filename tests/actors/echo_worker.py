"""A role worker with nothing to load, imported by Ray workers by module name: group mechanics without a model."""
from actors.base import RoleWorker


class EchoWorker(RoleWorker):
    def setup(self) -> None:
        pass
