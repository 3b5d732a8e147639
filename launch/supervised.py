"""The skeleton shared by the supervised stages (SFT, reward model): one trainable actor group, a fixed number of
steps over seeded batches, validation every N steps, the best checkpoint exported in HF format, atomic
checkpoints and exact resume. Subclasses say what a batch is and what validation measures."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from actors.group import RoleGroups, RoleSpec
from actors.trainable import reduce_train_stats
from rlhf.checkpoint import CheckpointManager
from rlhf.config import for_stage, model_sources
from rlhf.data.loading import DataError
from rlhf.memory_plan import check_stage_fits
from rlhf.numerics import BadStepGuard, last_good_checkpoint
from rlhf.models import load_tokenizer, resolve_model_path
from rlhf.seeding import derive_seed

from .ray_session import ray_session
from .runlog import RunLog, cleaned_up_if_never_started, prepare_run_dir
from .stopping import stop_signals


def split_rows(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, validation) row indices: round(count x fraction) rows held out."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = int(round(count * fraction))
    return order[held_out:], order[:held_out]


class SupervisedTrainer:
    stage = ""                 # 'sft' or 'rm': the config section and the engine settings it owns
    role = ""                  # whose actors and resources the stage uses: STAGE_ROLES[stage]
    worker_cls = None
    prefix = ""                # metric prefix
    higher_is_better = False   # of the selection metric
    export_best = True         # export the best-by-validation model to <run>/best_hf
    rows_name = "rows"         # what a row is, in messages

    def __init__(self, cfg, resume: bool = False):
        self.cfg = cfg = for_stage(cfg, self.stage)
        self.resume = resume
        self.section = getattr(cfg, self.stage)
        check_stage_fits(cfg, self.stage)     # from the model's config: nothing built yet, not even 'tiny'
        self.checkpoints = CheckpointManager(cfg.run_dir, cfg.checkpoint.keep_last)
        self.run_dir = prepare_run_dir(cfg, resume, lambda: self.checkpoints.latest() is not None)
        self.step, self.best = 0, None
        self.guard = BadStepGuard(cfg.run.max_bad_steps)
        source = model_sources(cfg, self.stage)[self.role]
        self.model_path = resolve_model_path(source.name, cfg.model.cache_dir, cfg.model.tiny, source.key)
        self.tokenizer_path = self.model_path
        self.tokenizer = load_tokenizer(self.model_path)

    # subclasses: self.steps_per_epoch, batch(step) -> batch object,
    # validate() -> (metrics, selection value), on_finish()

    def split(self, count: int, require_validation: bool = True) -> None:
        """Train / validation rows (seeded), checked before any actor starts: a full training batch, and at least
        one validation row when validation picks the model."""
        name, section = self.stage, self.section
        self.train_rows, self.val_rows = split_rows(count, section.validation_fraction,
                                                    derive_seed(self.cfg.run.seed, "split"))
        if len(self.train_rows) < section.batch_size:
            raise DataError(f"{section.data}: {len(self.train_rows)} training {self.rows_name}, fewer than "
                            f"{name}.batch_size {section.batch_size}")
        if require_validation and not self.val_rows:
            raise DataError(f"{section.data}: {name}.validation_fraction {section.validation_fraction} of {count} "
                            f"{self.rows_name} holds none out for validation; raise it")
        self.steps_per_epoch = len(self.train_rows) // section.batch_size

    def validation_chunks(self):
        """The validation rows in chunks of at most `batch_size` (the last may be smaller: none is dropped)."""
        size = self.section.batch_size
        return [self.val_rows[start:start + size] for start in range(0, len(self.val_rows), size)]

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.section.epochs * self.steps_per_epoch))

    def run(self) -> Path:
        with (cleaned_up_if_never_started(self.run_dir), stop_signals(self.stage, self) as stop,
              ray_session(self.cfg)):
            stop.watch()                  # SIGTERM / SIGINT end the run between two steps (launch/stopping.py)
            # the engine's LR schedule spans the stage's optimizer steps, which only the driver (its data) knows
            spec = RoleSpec(self.role, self.worker_cls, (self.model_path, self.total_steps), distributed=True)
            groups = RoleGroups(self.cfg, [spec], shared_dir=self.run_dir, writers=(self.role,))
            self.group = groups[self.role]
            try:
                # the stage's one group works alone: its actors share the cores the run has on their nodes
                groups.apply_phase_threads({"train": (self.role,)})
                if self.resume:
                    self.restore()
                self.log = RunLog(self.cfg, self.resume, self.step, total_steps=self.total_steps)
                try:
                    while self.step < self.total_steps:
                        stop.between_steps(self)  # after a stop signal: the last step checkpointed, then out
                        self.train_step()
                    self.on_finish()
                finally:
                    self.log.close()
            finally:
                self.release()
                groups.shutdown()
        return self.run_dir

    def train_step(self) -> None:
        self.step += 1
        start = time.perf_counter()
        # 1. the step's batch (seeded order per epoch), 2. one optimizer step on all actors
        batch = self.batch(self.step - 1)
        per_rank = self.group.run_shards("train", batch, [torch.arange(len(batch))])
        stats = reduce_train_stats(per_rank, self.prefix)
        self.guard.observe(self.role, per_rank[0]["skipped"], self.step,
                           last_good_checkpoint(self.checkpoints.latest(), self.stage))
        stats["time/train"] = time.perf_counter() - start
        # 3. validation every N steps and at the end; the best model so far is exported
        if self.step % self.section.eval_every == 0 or self.step == self.total_steps:
            metrics, value = self.validate()
            stats.update(metrics)
            better = self.best is None or (value > self.best if self.higher_is_better else value < self.best)
            if better:
                self.best = value
                if self.export_best:
                    self.group.run("export_hf", str(self.run_dir / "best_hf"), self.tokenizer_path)
            stats[f"{self.prefix}/best_selection_metric"] = self.best
        stats["time/step"] = time.perf_counter() - start
        self.log.log(self.step, stats)
        # 4. checkpoint every N steps and at the end
        at_end = self.step == self.total_steps and self.cfg.checkpoint.save_at_end
        if (at_end or (self.cfg.checkpoint.every and self.step % self.cfg.checkpoint.every == 0)) and self.guard.clean:
            self.save()

    def save(self) -> None:
        folder = self.checkpoints.begin(self.step)
        self.group.run("save_checkpoint", f"{folder}/{self.role}")
        self.checkpoints.commit(folder, self.step, {"step": self.step, "best": self.best,
                                                    "guard": self.guard.state_dict()})

    def restore(self) -> None:
        latest = self.checkpoints.latest()
        self.group.run("load_checkpoint", f"{latest}/{self.role}")
        state = CheckpointManager.driver_state(latest)
        self.step, self.best = state["step"], state["best"]
        if "guard" in state:
            self.guard.load_state_dict(state["guard"])

    def release(self) -> None:
        """Remove any other actors the stage started (e.g. an evaluator); runs whether the stage ended or failed."""

    def on_finish(self) -> None:
        self.group.run("export_hf", str(self.run_dir / "final_hf"), self.tokenizer_path)
