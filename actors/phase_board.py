"""Which actors of a phase are done, on one node: each actor touches a marker file of its own when it finishes a
phase's call, and one still working looks, between its micro-batches, for its node peers' markers made since its
own call began; it then takes their cores (`rlhf.placement_rules.PhaseShare`). Files in a node-local folder of the
run; the start of a call is the time stamp of a file touched then, so every time compared is the filesystem's, of
one node (its stamps can be a clock tick coarse: calls of one phase are a whole step apart)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class PhaseBoard:
    def __init__(self, token: str, role: str, rank: int):
        self.folder = Path(tempfile.gettempdir()) / f"rlhf-phase-board-{token}"
        self.folder.mkdir(exist_ok=True)
        self.mine = self.marker(role, rank)
        self.began = self.folder / f".{role}-{rank}-began"
        self.began_ns = 0

    def marker(self, role: str, rank: int) -> Path:
        return self.folder / f"{role}-{rank}"

    def begin(self) -> None:
        self.began.touch()
        self.began_ns = os.stat(self.began).st_mtime_ns

    def done_peers(self, peers) -> frozenset:
        """The (role, rank) of `peers` ((role, rank, cpus) on this node) that finished a call since this one began."""
        done = set()
        for role, rank, _ in peers:
            try:
                if os.stat(self.marker(role, rank)).st_mtime_ns >= self.began_ns:
                    done.add((role, rank))
            except FileNotFoundError:
                pass
        return frozenset(done)

    def mark_done(self) -> None:
        self.mine.touch()                   # an existing marker gets the time now too

    def close(self) -> None:
        """Remove this actor's marker, and the folder once it is empty (the last actor of the node)."""
        self.mine.unlink(missing_ok=True)
        self.began.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass
