"""Stopping a training stage by a signal. SIGTERM (a scheduler's cancel or preemption, `kill`, `rlhf jobs stop`) or
SIGINT (Ctrl-C) to the driver ends the stage at its next step boundary: the step in flight finishes, a checkpoint of
it is saved (`checkpoint.save_on_stop`), the logs are closed and the actors torn down, and `--resume` continues from
there. A second signal stops at once: the step in flight is abandoned and the last checkpoint stands."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(BaseException):
    """A stage stopped by signal `signum`, between steps or (`at_once`) in one. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way (a recovery's, a retry's) takes it for a failure."""

    def __init__(self, signum: int, at_once: bool = False):
        super().__init__(signum, at_once)
        self.signum, self.at_once = signum, at_once
        self.exit_code = 128 + signum               # what a shell reports for a process ended by the signal
        self.where, self.checkpoint = "", None

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}{self.where}"


class StopSignals:
    """What the handlers saw: `received` is the first stop signal's number (None before any)."""

    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}
        self.tearing_down = False

    def watch(self) -> None:
        """Take SIGTERM and SIGINT from here on (call it after `ray.init`, whose own SIGTERM handler would end the
        driver at once). Outside the main thread, where Python takes no signals, it watches nothing."""
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self.previous.setdefault(signum, signal.getsignal(signum))
                signal.signal(signum, self.handle)

    def between_steps(self, trainer) -> None:
        """At a stage's step boundary: after a stop signal, checkpoint the last complete step (`save_before_stop`)
        and raise the stop; signals from then on find the stage tearing down."""
        if self.received is not None:
            save_before_stop(trainer)
            self.tearing_down = True
            raise RunStopped(self.received)

    def handle(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if self.tearing_down:         # an interrupted teardown would leave actors and Ray's processes behind
            print(f"rlhf: {name} received: already stopping, the actors are being torn down", file=sys.stderr,
                  flush=True)
        elif self.received is not None:
            self.tearing_down = True
            raise RunStopped(signum, at_once=True)
        else:
            self.received = signum
            print(f"rlhf: {name} received: stopping after the step in flight; send it again to stop at once",
                  file=sys.stderr, flush=True)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def stop_signals(stage: str, trainer):
    """The stage's `StopSignals` for the block: enter it before the Ray session and `watch()` once Ray is up, so
    that the handlers stay through the teardown (the previous ones are back after it). The stage's loop calls
    `between_steps(trainer)`. A `RunStopped` leaving the block is told where `trainer` (a stage driver with `step`,
    `total_steps` and `checkpoints`) was: its last complete step, or the one in flight when stopped at once."""
    stop = StopSignals()
    try:
        yield stop
    except RunStopped as error:
        error.checkpoint = trainer.checkpoints.latest()
        error.where = (f" {'in' if error.at_once else 'after'} {stage} step {trainer.step} of {trainer.total_steps}, "
                       f"latest checkpoint: {error.checkpoint.name if error.checkpoint else 'none'}")
        raise
    finally:
        stop.restore()


def save_before_stop(trainer) -> None:
    """Checkpoint a stage's last complete step before it stops (`trainer`: a stage driver with `cfg`, `step`,
    `guard`, `checkpoints` and `save()`), unless that step has one (or is the start), a streak of skipped updates is
    open (the last good checkpoint stands) or `checkpoint.save_on_stop` is off."""
    if (trainer.cfg.checkpoint.save_on_stop and trainer.step > 0 and trainer.guard.clean
            and not trainer.checkpoints.has(trainer.step)):
        trainer.save()
