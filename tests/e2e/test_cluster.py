"""The local shared-cluster recipe as a user runs it: `cluster/local.sh` starts a head on loopback; `rlhf ppo
--run.ray_address` attaches to it without retrying for minutes and leaves it running; `rlhf submit` sends a PPO run
as a Ray job (which attaches through RAY_ADDRESS), follows it to success, and `rlhf jobs` lists it. The head is
stopped by its own process group id, never with `ray stop` (which would stop every Ray on the machine)."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from launch.runlog import read_metrics

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def local_head(tmp_path):
    """(GCS address, job API address) of a head started by cluster/local.sh on free ports."""
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "NUM_CPUS": "8", "PORT": str(port), "DASHBOARD_PORT": str(dashboard)}
    env.pop("RAY_ADDRESS", None)
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")      # Ray's socket paths must stay under 108 bytes
    # the test session's own cluster holds Ray's fixed default ports (the dashboard agent's 52365...): free ones here
    ports = [f"--{name}={free_port()}" for name in ("ray-client-server-port", "dashboard-agent-listen-port",
                                                     "dashboard-agent-grpc-port", "metrics-export-port",
                                                     "runtime-env-agent-port")]
    head = subprocess.Popen(["bash", str(ROOT / "cluster" / "local.sh"), "--block", *ports, "--temp-dir", temp],
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not all(listening(p) for p in (port, dashboard)):
            assert head.poll() is None, head.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the head did not come up"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"
    finally:
        stop(head)
        shutil.rmtree(temp, ignore_errors=True)


def stop(head: subprocess.Popen) -> None:
    """The head and what it started: its process group, by the id this test started it with."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(head.pid, sig)
            head.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# two short steps with four roles (GRPO: no value actors): what is tested is where the run runs, not PPO
PPO = ["--run.num_steps", "2", "--rollout.prompts_per_step", "4", "--rollout.n_samples_per_prompt", "2",
       "--ppo.advantage_estimator", "grpo", "--ppo.num_minibatches", "1", "--deepspeed.policy.micro_batch_size", "8",
       "--checkpoint.export_hf", "false", "--logging.progress_bar", "false"]


def rlhf(*args, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_local_shared_cluster_attach_and_submit(local_head, tmp_path, model_cache):
    gcs, job_api = local_head
    common = [*PPO, "--run.output_dir", str(tmp_path), "--model.cache_dir", model_cache]
    started = time.monotonic()
    attached = rlhf("ppo", "--run.name", "attached", "--run.ray_address", gcs, *common)
    assert attached.returncode == 0, attached.stderr[-3000:]
    assert time.monotonic() - started < 120                      # attached at once, no minutes of retries
    assert "Connecting to existing Ray cluster" in attached.stderr
    assert "Started a local Ray instance" not in attached.stderr

    submitted = rlhf("submit", "--address", job_api, "--", "rlhf", "ppo", "--run.name", "submitted", *common)
    assert submitted.returncode == 0, (submitted.stdout[-3000:], submitted.stderr[-2000:])
    job_id = submitted.stdout.split("submitted job ", 1)[1].split()[0]
    assert "done: " in submitted.stdout                           # the job's own log, followed to its end
    assert f"job {job_id}: SUCCEEDED" in submitted.stderr
    for name in ("attached", "submitted"):
        assert [row["step"] for row in read_metrics(tmp_path / name)] == [1, 2]
    listed = rlhf("jobs", "list", "--address", job_api, timeout=60)
    assert listed.returncode == 0 and f"{job_id}  SUCCEEDED" in listed.stdout
    logs = rlhf("jobs", "logs", job_id, "--address", job_api, timeout=60)
    assert "done: " in logs.stdout

    # `rlhf jobs stop`: Ray sends the job SIGTERM; the run ends after its step in flight, checkpointed, within the
    # --stop-wait that `rlhf submit` gave the job (Ray's own default, 3 s, would kill it before the checkpoint)
    long = rlhf("submit", "--address", job_api, "--no-wait", "--stop-wait", "90", "--", "rlhf", "ppo", "--run.name",
                "stopped", *common, "--run.num_steps", "1000", "--checkpoint.every", "0")
    assert long.returncode == 0, long.stderr[-2000:]
    long_id = long.stdout.split("submitted job ", 1)[1].split()[0]
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert time.monotonic() < deadline, rlhf("jobs", "logs", long_id, "--address", job_api).stdout[-3000:]
        time.sleep(0.5)
    assert rlhf("jobs", "stop", long_id, "--address", job_api, timeout=60).stdout.strip() == f"job {long_id}: stop " \
                                                                                              "requested"
    while f"{long_id}  STOPPED" not in rlhf("jobs", "list", "--address", job_api, timeout=60).stdout:
        assert time.monotonic() < deadline + 120, "the job did not stop"
        time.sleep(1)
    steps = len(read_metrics(tmp_path / "stopped"))
    logs = rlhf("jobs", "logs", long_id, "--address", job_api, timeout=60).stdout
    assert (f"rlhf ppo: stopped by SIGTERM after ppo step {steps} of 1000, latest checkpoint: step_{steps:06d}"
            in logs), logs[-3000:]
    assert sorted(p.name for p in (tmp_path / "stopped" / "checkpoints").glob("step_*")) == [f"step_{steps:06d}"]
