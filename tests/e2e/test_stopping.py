"""Stopping a run by a signal (`launch/stopping.py`): the handlers; `rlhf ppo` as a user runs it, stopped at once by
Ctrl-C (SIGINT to its process group, Ray's processes too) and a second signal, leaving no process behind; logging
that goes on when wandb's service is gone (signalled with the driver's process tree). A run ended by one signal
after its step and resumed from its checkpoint: `test_resume_and_learning.py`; by `rlhf jobs stop`:
`test_cluster.py`."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from launch.stopping import RunStopped, StopSignals, stop_signals
from rlhf.checkpoint import CheckpointManager
from tests.conftest import small_config
from tests.e2e.test_cli import ENV, with_cache


def test_first_signal_asks_second_stops_at_once_teardown_ignores_and_handlers_come_back(tmp_path):
    checkpoints = CheckpointManager(tmp_path, keep_last=2)
    checkpoints.commit(checkpoints.begin(5), 5, {"step": 5})
    # a stage driver as stop_signals / between_steps see it, between steps 7 and 8 of 20, its step 5 checkpointed
    stage = SimpleNamespace(step=7, total_steps=20, checkpoints=checkpoints, guard=SimpleNamespace(clean=True),
                            cfg=SimpleNamespace(checkpoint=SimpleNamespace(save_on_stop=False)))
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(RunStopped) as stopped:
        with stop_signals("sft", stage) as stop:
            stop.watch()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)                           # the handler runs in this thread between bytecodes
            assert stop.received == signal.SIGTERM and not stop.tearing_down
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
            pytest.fail("the second signal did not stop at once")
    assert stopped.value.at_once and stopped.value.exit_code == 128 + signal.SIGINT
    assert str(stopped.value) == "stopped by SIGINT in sft step 7 of 20, latest checkpoint: step_000005"
    assert {signum: signal.getsignal(signum) for signum in before} == before

    stop = StopSignals()
    stop.between_steps(stage)                          # no signal yet: nothing happens
    stop.received = signal.SIGTERM
    with pytest.raises(RunStopped) as stopped:
        stop.between_steps(stage)                      # the stage's loop at a step boundary
    error = stopped.value
    assert error.exit_code == 128 + signal.SIGTERM and not error.at_once
    stop.handle(signal.SIGTERM, None)                  # tearing down: ignored, nothing raised


def session_processes(session: int) -> list[str]:
    """Processes of session `session` (the driver's, with Ray's processes; its workers have process groups of
    their own in it): 'pid name' each."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == session:
            found.append(f"{pid} {name}")
    return found


def start_ppo(folder: Path, *args) -> subprocess.Popen:
    """`rlhf ppo` on the toy task in a session of its own (as a shell starts a job), long enough to be stopped; its
    output goes to the file `driver.log`."""
    log = folder / f"driver-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "launch.cli", *with_cache([
            "ppo", "--run.num_steps", "1000", "--checkpoint.every", "0", "--checkpoint.export_hf", "false",
            "--run.output_dir", str(folder / "runs"), "--logging.progress_bar", "false", *args])],
            stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    driver.log = log
    return driver


def metrics_lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for_steps(driver: subprocess.Popen, run: Path, count: int) -> None:
    deadline = time.monotonic() + 300
    while metrics_lines(run) < count:
        assert driver.poll() is None and time.monotonic() < deadline, driver.log.read_text()[-3000:]
        time.sleep(0.1)


def ended(driver: subprocess.Popen) -> tuple[int, str]:
    """Exit code and output of the stopped driver, once no process of its session is left."""
    code = driver.wait(timeout=120)
    deadline = time.monotonic() + 30
    while session_processes(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not session_processes(driver.pid), session_processes(driver.pid)
    return code, driver.log.read_text()


@pytest.mark.slow
def test_ctrl_c_then_sigterm_stop_rlhf_ppo_at_once_and_leave_no_process(tmp_path):
    run = tmp_path / "runs" / "ppo-default"
    driver = start_ppo(tmp_path)
    wait_for_steps(driver, run, 2)
    os.killpg(driver.pid, signal.SIGINT)               # Ctrl-C: the whole foreground group, Ray's processes too
    os.kill(driver.pid, signal.SIGTERM)                # and again: at once
    code, output = ended(driver)
    assert code == 128 + signal.SIGTERM, output[-3000:]
    line = next(line for line in output.splitlines() if line.startswith("rlhf ppo: stopped"))
    in_flight = int(line.split(" in ppo step ")[1].split()[0])
    assert in_flight - metrics_lines(run) in (0, 1)   # abandoned before (or, rarely, just after) logging it
    assert line == f"rlhf ppo: stopped by SIGTERM in ppo step {in_flight} of 1000, latest checkpoint: none"
    assert not (run / "checkpoints").exists() or not list((run / "checkpoints").glob("step_*"))


def test_a_run_goes_on_without_wandb_once_its_service_is_gone(tmp_path, model_cache, monkeypatch, capsys):
    """A job stopped through its whole process tree signals wandb's service too: logging goes on to metrics.jsonl."""
    import psutil

    from launch.runlog import RunLog

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = small_config(tmp_path, model_cache, "wandb-gone", logging={"wandb_mode": "offline", "progress_bar": False})
    log = RunLog(cfg, resume=False)
    log.log(1, {"reward/score_mean": 0.5})
    started = {p.pid: p for p in psutil.Process().children(recursive=True) if p.name().startswith("wandb")}
    assert started, "wandb started no service process"
    for process in started.values():               # the service this test's RunLog started, by its pid
        process.terminate()
    psutil.wait_procs(list(started.values()), timeout=30)
    log.log(2, {"reward/score_mean": 0.6})
    log.close()
    assert [json.loads(line)["step"] for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert log.wandb is None
    assert "rlhf: wandb stopped at step" in capsys.readouterr().err
