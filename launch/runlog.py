"""The run directory and the one metrics logger: resolved config, metrics.jsonl (one JSON object per step with a
`step` key), samples.jsonl, wandb (online / offline / disabled), and the console progress bar."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from tqdm import tqdm

from rlhf.config import dump_config


class RunDirError(RuntimeError):
    pass


def wandb_mode(configured: str) -> str:
    """'auto' is online when an API key is set, offline otherwise (never asks for a key)."""
    if configured != "auto":
        return configured
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def prepare_run_dir(cfg, resume: bool, has_checkpoint) -> Path:
    """Check the run directory before any actor starts: a new run needs it absent or empty (a directory that
    already holds a run is refused), a resumed one needs a complete checkpoint (`has_checkpoint()`)."""
    run_dir = cfg.run_dir
    if resume:
        if not has_checkpoint():
            raise RunDirError(f"--resume: no complete checkpoint in {run_dir}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(f"run directory {run_dir} already holds a run; pass --resume to continue it or set "
                          f"--run.name to start another")
    return run_dir


class RunLog:
    def __init__(self, cfg, resume: bool, resume_step: int = 0, total_steps: int | None = None):
        """Opened once the actors are up; the directory was checked by `prepare_run_dir`."""
        self.cfg = cfg
        self.dir = cfg.run_dir
        self.metrics_path = self.dir / "metrics.jsonl"
        self.samples_path = self.dir / "samples.jsonl"
        self.dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, self.dir / "config.yaml")
        if resume:
            self._truncate_after(resume_step)
        self.wandb = self._start_wandb(resume)
        self.wandb_step = resume_step if resume else 0
        self.progress = tqdm(total=total_steps or cfg.run.num_steps, initial=resume_step, desc=cfg.run.name, unit="step",
                             disable=not cfg.logging.progress_bar, dynamic_ncols=True)

    def _truncate_after(self, step: int) -> None:
        """Drop lines of steps after the checkpoint we resume from, so each step appears once."""
        for path in (self.metrics_path, self.samples_path):
            if path.exists():
                kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
                tmp = path.with_suffix(".tmp")
                tmp.write_text("".join(line + "\n" for line in kept))
                os.replace(tmp, path)

    def _start_wandb(self, resume: bool):
        mode = wandb_mode(self.cfg.logging.wandb_mode)
        if mode == "disabled":
            return None
        import wandb

        id_file = self.dir / "wandb_id"
        run_id = id_file.read_text().strip() if resume and id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        os.environ.setdefault("WANDB_SILENT", "true")
        log = self.cfg.logging
        return wandb.init(project=log.wandb_project, name=log.wandb_run_name or self.cfg.run.name,
                          group=log.wandb_group, mode=mode, dir=str(self.dir), id=run_id, resume="allow",
                          config=self.cfg.model_dump(mode="json"))

    def log(self, step: int, metrics: dict, samples: list[dict] | None = None) -> None:
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if samples:
            with self.samples_path.open("a") as handle:
                for sample in samples:
                    handle.write(json.dumps({"step": step, **sample}) + "\n")
        if self.wandb is not None and step > self.wandb_step:   # a replayed step is already there, unchanged
            self.wandb_step = step
            payload = dict(metrics)
            if samples:
                import wandb

                columns = list(samples[0])
                payload["samples"] = wandb.Table(columns=columns, data=[[s[c] for c in columns] for s in samples])
            self._to_wandb(step, lambda: self.wandb.log(payload, step=step))
        self.progress.update(1)
        shown = {k.split("/")[-1]: f"{metrics[k]:.3g}" for k in ("reward/score_mean", "kl/sequence_mean",
                 "sft/loss", "rm/loss", "rm/accuracy", "time/step") if k in metrics}
        self.progress.set_postfix(shown)

    def rewind(self, step: int) -> None:
        """Back to just after `step` (a replay from its checkpoint follows): later lines are dropped from
        metrics.jsonl and samples.jsonl, so each step appears once. wandb keeps its rows: it cannot drop them, and a
        replay is exact, so the replayed rows are the ones it has."""
        self._truncate_after(step)
        self.progress.n = step
        self.progress.refresh()

    def close(self) -> None:
        self.progress.close()
        if self.wandb is not None:
            self._to_wandb(self.wandb_step, self.wandb.finish)

    def _to_wandb(self, step: int, call) -> None:
        """`call()` to wandb; if it fails (its service process gone: a scheduler or `rlhf jobs stop` signals the
        driver's whole process tree), the run goes on without wandb after one line: metrics.jsonl has every step."""
        try:
            call()
        except Exception as error:
            print(f"rlhf: wandb stopped at step {step} ({type(error).__name__}: {error}); the run goes on without it, "
                  f"metrics.jsonl has every step", file=sys.stderr, flush=True)
            self.wandb = None
            import wandb

            with contextlib.suppress(Exception):     # fails too, but then wandb's exit hook prints no traceback
                wandb.teardown()


@contextlib.contextmanager
def cleaned_up_if_never_started(run_dir: Path):
    """A run that fails before logging its first step leaves behind none of the folders it made (the run
    directory, and `run.output_dir` and its parents when they were made for it)."""
    run_dir = Path(run_dir)
    made = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    try:
        yield
    except BaseException:
        if made and not any(made[-1].rglob("metrics.jsonl")):   # nothing logged: no step of any stage ran
            shutil.rmtree(made[-1], ignore_errors=True)          # the outermost folder this run created
        raise


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]
