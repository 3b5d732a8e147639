"""Lost actors are survived. In one run, processes this test's run started are killed by their pid: a rollout
actor after step 1 (recreated in place with the current policy weights, the step retried with the same seeds) and
the policy's rank after step 3 (every trainable group recreated, the step-2 checkpoint reloaded, steps 3 and 4
replayed). The run ends at its planned step, with one row per step and exactly the metrics of the uninterrupted
run; both losses are in errors.log."""
import os
import signal
import threading

import pytest
from ray._private.state import actors as actor_table

from launch.ppo import run_ppo
from launch.runlog import read_metrics
from tests.conftest import layout_config, wait_for_logged_step
from tests.e2e.test_equivalence import COMPARED

pytestmark = pytest.mark.slow


def kill_when(metrics_path, after_step: int, class_name: str, rank: int = 0) -> threading.Thread:
    """A thread that, once `after_step` is logged, SIGKILLs the `class_name` actor of that rank of the run."""

    def kill():
        wait_for_logged_step(metrics_path, after_step)
        alive = [a for a in actor_table().values() if a["ActorClassName"] == class_name and a["State"] == "ALIVE"]
        assert alive, f"no live {class_name}"
        os.kill(sorted(a["Pid"] for a in alive)[rank], signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_lost_rollout_and_policy_actors_are_recovered_and_the_run_matches(layout_run, tmp_path, model_cache):
    baseline = layout_run(1, 0)
    cfg = layout_config(tmp_path, model_cache, "killed", 1, 0, checkpoint__every=2)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    killers = [kill_when(metrics, 1, "RolloutWorker"), kill_when(metrics, 3, "PolicyWorker")]
    rows = read_metrics(run_ppo(cfg))
    for killer in killers:
        killer.join(timeout=5)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert rows[-1]["run/recoveries"] == 2
    for expected, got in zip(baseline, rows):
        for key in COMPARED:
            assert got[key] == pytest.approx(expected[key], rel=2e-4, abs=2e-5), (expected["step"], key)
    log = (tmp_path / "killed" / "errors.log").read_text()
    assert "lost {'rollout': [0]}" in log and "lost {'policy': [0]}" in log
