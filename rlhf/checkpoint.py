"""The one checkpoint layout and its atomic commit.

<run>/checkpoints/step_000010/        complete checkpoints only (written as .step_000010.tmp, then renamed)
    driver_state.pt                    step, KL controller, reward normalizer, data positions
    policy/, value/                    DeepSpeed checkpoints of the trainable roles (model, optimizer, scheduler)
<run>/checkpoints/latest               name of the newest complete checkpoint, replaced atomically
A crash while writing leaves only a .tmp folder, which the next run deletes; `latest` still names a whole one.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch


class CheckpointManager:
    def __init__(self, run_dir: Path, keep_last: int):
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def begin(self, step: int) -> Path:
        """A fresh temporary folder for the checkpoint of `step` (leftovers of a crashed write are removed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".step_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.root / f".{self.folder(step).name}.tmp"
        tmp.mkdir()
        return tmp

    def commit(self, tmp: Path, step: int, driver_state: dict) -> Path:
        """Write the driver state, rename the folder into place, point `latest` at it, prune old ones."""
        torch.save(driver_state, tmp / "driver_state.pt")
        final = self.folder(step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = self.root / ".latest.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, self.root / "latest")
        for old in self.complete()[:-self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def complete(self) -> list[Path]:
        return sorted(p for p in self.root.glob("step_*") if p.is_dir()) if self.root.exists() else []

    def folder(self, step: int) -> Path:
        """Where the checkpoint of `step` is, once complete."""
        return self.root / f"step_{step:06d}"

    def has(self, step: int) -> bool:
        """Whether a complete checkpoint of `step` exists."""
        return (self.folder(step) / "driver_state.pt").exists()

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.exists():
            return None
        path = self.root / pointer.read_text().strip()
        return path if (path / "driver_state.pt").exists() else None

    @staticmethod
    def driver_state(path: Path) -> dict:
        return torch.load(path / "driver_state.pt", weights_only=True)     # tensors and plain data only
