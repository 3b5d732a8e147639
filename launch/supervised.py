"""The skeleton shared by the supervised stages (SFT, reward model): one trainable actor group, a fixed number of
steps over seeded batches, validation every N steps, the best checkpoint exported in HF format, atomic
checkpoints and exact resume. Subclasses say what a batch is and what validation measures."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from actors.group import ActorGroup
from actors.placement import create_placement_groups, remove_groups
from actors.roles import gather
from actors.trainable import reduce_train_stats
from rlhf.checkpoint import CheckpointManager

from .ray_session import ray_session
from .runlog import RunLog, cleaned_up_if_never_started


class SupervisedTrainer:
    role = "policy"            # whose actors and resources the stage uses
    worker_cls = None
    prefix = ""                # metric prefix
    higher_is_better = False   # of the selection metric
    export_best = True         # export the best-by-validation model to <run>/best_hf

    def __init__(self, cfg, resume: bool = False):
        self.cfg, self.resume = cfg, resume
        self.run_dir = Path(cfg.run.output_dir).expanduser() / cfg.run.name
        self.checkpoints = CheckpointManager(self.run_dir, cfg.checkpoint.keep_last)
        self.step, self.best = 0, None

    # subclasses: self.section (sft/rm config), self.model_path, self.tokenizer_path, self.steps_per_epoch,
    # batch(step) -> batch object, validate() -> (metrics, selection value), on_finish()

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.section.epochs * self.steps_per_epoch))

    def run(self) -> Path:
        with cleaned_up_if_never_started(self.run_dir), ray_session(self.cfg):
            placements = create_placement_groups(self.cfg.actors, [self.role])
            self.group = ActorGroup(self.worker_cls, self.role, getattr(self.cfg.actors, self.role),
                                    placements[self.role], self.cfg.model_dump(mode="json"), True)
            try:
                gather(self.group.call("setup", self.model_path))
                if self.resume:
                    self.restore()
                self.log = RunLog(self.cfg, self.resume, self.step, total_steps=self.total_steps)
                try:
                    while self.step < self.total_steps:
                        self.train_step()
                    self.on_finish()
                finally:
                    self.log.close()
            finally:
                self.group.shutdown()
                remove_groups(placements)
        return self.run_dir

    def train_step(self) -> None:
        self.step += 1
        start = time.perf_counter()
        # 1. the step's batch (seeded order per epoch), 2. one optimizer step on all actors
        batch = self.batch(self.step - 1)
        stats = reduce_train_stats(gather(self.group.call("train", batch, [torch.arange(len(batch))])), self.prefix)
        stats["time/train"] = time.perf_counter() - start
        # 3. validation every N steps and at the end; the best model so far is exported
        if self.step % self.section.eval_every == 0 or self.step == self.total_steps:
            metrics, value = self.validate()
            stats.update(metrics)
            better = self.best is None or (value > self.best if self.higher_is_better else value < self.best)
            if better:
                self.best = value
                if self.export_best:
                    gather(self.group.call("export_hf", str(self.run_dir / "best_hf"), self.tokenizer_path))
            stats[f"{self.prefix}/best_selection_metric"] = self.best
        stats["time/step"] = time.perf_counter() - start
        self.log.log(self.step, stats)
        # 4. checkpoint every N steps and at the end
        at_end = self.step == self.total_steps and self.cfg.checkpoint.save_at_end
        if at_end or (self.cfg.checkpoint.every and self.step % self.cfg.checkpoint.every == 0):
            folder = self.checkpoints.begin(self.step)
            gather(self.group.call("save_checkpoint", f"{folder}/{self.role}"))
            self.checkpoints.commit(folder, self.step, {"step": self.step, "best": self.best})

    def restore(self) -> None:
        latest = self.checkpoints.latest()
        if latest is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint under {self.checkpoints.root}")
        gather(self.group.call("load_checkpoint", f"{latest}/{self.role}"))
        state = CheckpointManager.driver_state(latest)
        self.step, self.best = state["step"], state["best"]

    def on_finish(self) -> None:
        gather(self.group.call("export_hf", str(self.run_dir / "final_hf"), self.tokenizer_path))
