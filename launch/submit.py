"""`rlhf submit` and `rlhf jobs`: any `rlhf` command as a Ray job on a running cluster (Ray Jobs API), and the jobs
there listed, stopped and tailed. Inside the job RAY_ADDRESS is set, so the command attaches to that cluster.

The project travels as the job's `working_dir` (this checkout, without runs, environments, caches or weights) and
the command runs as `python -m launch.cli ...` from it, so the cluster runs this code even where an older `rlhf`
is installed; `--installed` uses the cluster's own installed package instead. Environment variables are passed by
name (`--env NAME`), their values read here. The wandb key is never passed: a job's runtime environment is shown
to anyone who can list jobs, so the key belongs on the cluster (a Kubernetes Secret, the nodes' environment)."""
from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STOP_WAIT_S = 120     # what `rlhf jobs stop` gives a run to finish its step and checkpoint it, by default
EXCLUDES = ["runs/", ".venv/", ".git/", "wandb/", "**/__pycache__/", "*.safetensors", "*.bin", "*.pt", "*.gguf",
            ".pytest_cache/"]
SECRETS = ("WANDB_API_KEY",)
DEFAULT_ADDRESS = "http://127.0.0.1:8265"


class SubmitError(ValueError):
    """A submission that cannot be made, worded as one line."""


def job_address(address: str | None) -> str:
    """The job API: `--address`, else RAY_API_SERVER_ADDRESS / RAY_ADDRESS when they are HTTP addresses, else the
    local head's default (a tunnel to a remote head's dashboard port lands there too)."""
    for candidate in (address, os.environ.get("RAY_API_SERVER_ADDRESS"), os.environ.get("RAY_ADDRESS")):
        if candidate and candidate.startswith(("http://", "https://")):
            return candidate
    if address:
        raise SubmitError(f"--address: expected the dashboard's http://host:port, got {address!r}")
    return DEFAULT_ADDRESS


def client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    from .ray_session import use_cluster_token

    use_cluster_token()
    url = job_address(address)
    try:
        return JobSubmissionClient(url)
    except (ConnectionError, RuntimeError) as error:
        raise SubmitError(f"no Ray job API at {url} ({str(error).splitlines()[0]}); is the cluster up, with its "
                          "dashboard, and the port tunnelled here?") from None


def job_spec(command: list[str], env_names: list[str], installed: bool, stop_wait_s: int = STOP_WAIT_S) -> dict:
    """The entrypoint and runtime environment of a job running `command` (`rlhf <stage> ...`). `rlhf jobs stop`
    has Ray send the job SIGTERM and kill it `stop_wait_s` later (Ray's job supervisor, which runs in the job's
    runtime environment, reads RAY_JOB_STOP_WAIT_TIME_S there): time for the run to end after its step in flight,
    checkpointed (`launch/stopping.py`). `--env RAY_JOB_STOP_WAIT_TIME_S` passes the caller's value instead."""
    if not command or command[0] != "rlhf" or len(command) < 2:
        raise SubmitError("give the command to run after --, e.g. rlhf submit -- rlhf ppo --config my.yaml")
    for name in env_names:
        if name in SECRETS:
            raise SubmitError(f"--env {name}: secrets are not sent with a job (its environment is shown to anyone "
                              "who lists jobs); set it on the cluster's nodes or in a Kubernetes Secret")
        if name not in os.environ:
            raise SubmitError(f"--env {name}: not set in this environment")
    runtime_env: dict = {"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(stop_wait_s),
                                      **{name: os.environ[name] for name in env_names}}}
    if installed:
        entrypoint = shlex.join(command)
    else:
        entrypoint = shlex.join(["python", "-m", "launch.cli", *command[1:]])
        runtime_env.update(working_dir=str(ROOT), excludes=EXCLUDES)
    return {"entrypoint": entrypoint, "runtime_env": runtime_env}


def _agent_not_ready(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and "No available agent to submit job" in str(error)


def submit_when_ready(jobs, spec: dict) -> str:
    """Submit; a head that has just started may not have its job agent up yet (HTTP 500, 'No available agent'):
    that one answer is retried for up to a minute, anything else is raised at once."""
    from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

    submit_once = retry(retry=retry_if_exception(_agent_not_ready), stop=stop_after_delay(60), wait=wait_fixed(2),
                        reraise=True)(jobs.submit_job)
    return submit_once(**spec)


def follow(jobs, job_id: str) -> int:
    """Print the job's log as it is written until it ends; 0 if it succeeded, 1 otherwise."""
    from ray.job_submission import JobStatus

    async def tail():
        async for lines in jobs.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())
    status = jobs.get_job_status(job_id)
    print(f"job {job_id}: {status.value}", file=sys.stderr)
    return 0 if status == JobStatus.SUCCEEDED else 1


def submit(command: list[str], address: str | None, env_names: list[str], installed: bool, wait: bool,
           stop_wait_s: int = STOP_WAIT_S) -> int:
    spec = job_spec(command, env_names, installed, stop_wait_s)        # a wrong command fails before any connection
    jobs = client(address)
    job_id = submit_when_ready(jobs, spec)
    print(f"submitted job {job_id} to {job_address(address)}: {shlex.join(command)}", flush=True)
    print(f"  follow: rlhf jobs logs {job_id} --follow    stop: rlhf jobs stop {job_id}", flush=True)
    return follow(jobs, job_id) if wait else 0


def jobs_command(action: str, job_id: str | None, address: str | None, wait: bool) -> int:
    jobs = client(address)
    if action == "list":
        for info in sorted(jobs.list_jobs(), key=lambda i: i.start_time or 0):
            print(f"{info.submission_id or info.job_id}  {info.status.value:<9}  {info.entrypoint}")
        return 0
    if job_id is None:
        raise SubmitError(f"rlhf jobs {action} needs a job id (see rlhf jobs list)")
    if action == "stop":
        print(f"job {job_id}: {'stop requested' if jobs.stop_job(job_id) else 'already ended'}")
        return 0
    if wait:
        return follow(jobs, job_id)
    print(jobs.get_job_logs(job_id), end="")
    return 0
