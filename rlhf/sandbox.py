"""The one way any code the system executes (HumanEval tests, tampered answers, a model's code) is run.

Each program runs in a separate process group with, where the kernel allows (root here, see `isolation()`):
  - its own network namespace (no interface but a down loopback: every connection fails), PID namespace (it
    cannot see or signal anything outside; a small root reaper is PID 1, the program PID 2) and mount namespace
    (fresh size-limited tmpfs on /tmp, /var/tmp and /dev/shm: its working folder is one, nothing it writes there
    outlives it or reaches the host's /tmp);
  - an unprivileged user of its own (uid/gid 61000+, no groups): it cannot write the machine's or our files, and
    its process limit is not shared with other programs running at the same time;
resource limits (CPU seconds, address space, processes, file size, open files, no core dumps), a scrubbed
environment (no secret of ours reaches it), the operating system's `python3` in isolated mode, a wall-clock
deadline after which its whole process group (and namespace) is killed, and output cut to a limit.
Without root, the program runs as our user with the resource limits, the scrubbed environment and the deadline;
`isolation()` says which parts are enforced and every result carries it.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
UID_BASE, UID_SLOTS = 61000, 4000
_uids = itertools.count((os.getpid() * 7919) % UID_SLOTS)
_uid_lock = threading.Lock()


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0          # wall clock, from start to kill
    memory_mb: int = 1024            # address space (RLIMIT_AS)
    max_processes: int = 32          # processes and threads of the program's user (RLIMIT_NPROC)
    file_size_mb: int = 16           # largest file it may write, its captured output included (RLIMIT_FSIZE)
    tmp_size_mb: int = 64            # size of each private tmpfs (working folder, /tmp, /var/tmp, /dev/shm)
    output_chars: int = 4000         # of stdout and of stderr kept in the result


@dataclass
class SandboxResult:
    status: str                      # passed | failed | timeout | limit | error (the sandbox could not run it)
    exit_code: int | None            # the program's exit code; None when a signal ended it
    seconds: float
    stopped_by: str | None           # wall_clock | cpu_time | memory | processes | file_size | signal N | None
    stdout: str
    stderr: str
    isolation: str                   # what was enforced (see `isolation()`)
    user: int | None = None          # the uid it ran as (a user of its own), None without isolation

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


@functools.lru_cache(maxsize=1)
def isolation() -> str:
    """'namespaces+user' (root: network, PID and mount namespaces and a user of its own), or 'limits' (resource
    limits, scrubbed environment and deadline only: no root, or `unshare` unavailable)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not os.path.exists(SYSTEM_PYTHON):
        return "limits"
    probe = subprocess.run([*_unshare(), SYSTEM_PYTHON, "-I", "-S", "-c", "pass"], capture_output=True, timeout=30)
    return "namespaces+user" if probe.returncode == 0 else "limits"


def _unshare() -> list[str]:
    return ["unshare", "--net", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc"]


def _next_uid() -> int:
    with _uid_lock:
        return UID_BASE + next(_uids) % UID_SLOTS


# Runs first, with the system python in isolated mode: as root inside the namespaces (or as our user without them).
# It prepares the folders, then forks: the child sets the limits, drops to the program's user and execs the
# program; the parent stays as PID 1 (which the kernel shields from the program's signals), reaps, and writes the
# child's exit status to the status pipe.
_BOOTSTRAP = r"""
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
source = open(cfg["source"], "rb").read()
work = cfg["work"]
if cfg["namespaces"]:
    libc = ctypes.CDLL(None, use_errno=True)
    for target in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(target):
            options = ("size=%dm,mode=1777" % cfg["tmp_mb"]).encode()
            if libc.mount(b"tmpfs", target.encode(), b"tmpfs", 0, options) != 0:
                raise OSError(ctypes.get_errno(), "mount tmpfs on " + target)
    work = "/tmp/work"
    os.mkdir(work, 0o700)
    os.chown(work, cfg["uid"], cfg["uid"])
path = os.path.join(work, "main.py")
with open(path, "wb") as f:
    f.write(source)
if cfg["namespaces"]:
    os.chown(path, cfg["uid"], cfg["uid"])
pid = os.fork()
if pid == 0:
    os.close(cfg["status_fd"])
    limits = {resource.RLIMIT_CPU: cfg["cpu_s"], resource.RLIMIT_AS: cfg["memory"], resource.RLIMIT_NPROC:
              cfg["nproc"], resource.RLIMIT_FSIZE: cfg["fsize"], resource.RLIMIT_NOFILE: 64, resource.RLIMIT_CORE: 0}
    for which, value in limits.items():
        if value is not None:
            resource.setrlimit(which, (value, value))
    if cfg["namespaces"]:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
    os.chdir(work)
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
    os.execve(cfg["python"], [cfg["python"], "-I", "-B", "main.py"], env)
_, status = os.waitpid(pid, 0)
os.write(cfg["status_fd"], json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
"""


def run_python(source: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `source` (a whole Python program) in the sandbox; never raises for anything the program does."""
    mode = isolation()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rlhf-sandbox-") as folder:
        folder = Path(folder)
        (folder / "source.py").write_text(source)
        work = folder / "work"
        work.mkdir()
        cfg = {"source": str(folder / "source.py"), "work": str(work), "namespaces": mode != "limits",
               "uid": _next_uid(), "tmp_mb": limits.tmp_size_mb, "cpu_s": int(limits.timeout_s) + 1,
               "memory": limits.memory_mb << 20, "fsize": limits.file_size_mb << 20,
               # without a user of its own, a process limit would count all of our user's processes
               "nproc": limits.max_processes if mode != "limits" else None,
               "python": SYSTEM_PYTHON if mode != "limits" else _our_python()}
        prefix = _unshare() if mode != "limits" else []
        status_read, status_write = os.pipe()
        cfg["status_fd"] = status_write
        with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
            try:
                process = subprocess.Popen(
                    [*prefix, cfg["python"], "-I", "-S", "-c", _BOOTSTRAP, json.dumps(cfg)], stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd=folder,
                    start_new_session=True, pass_fds=(status_write,))
            except OSError as error:
                os.close(status_read)
                os.close(status_write)
                return SandboxResult("error", None, 0.0, None, "", f"sandbox could not start: {error}", mode)
            os.close(status_write)
            timed_out = not _exited_within(process, limits.timeout_s)
            if timed_out:
                _kill_group(process)
            with os.fdopen(status_read, "rb") as pipe:
                reported = pipe.read()
        seconds = time.monotonic() - began
        stdout = _read_cut(folder / "stdout", limits.output_chars, head=True)
        stderr = _read_cut(folder / "stderr", limits.output_chars, head=False)   # a traceback ends with its error
    exit_code = json.loads(reported)["exit"] if reported else None
    result = _classify(exit_code, timed_out, seconds, stdout, stderr, mode)
    result.user = cfg["uid"] if cfg["namespaces"] else None
    return result


def run_many(sources: list[str], limits: SandboxLimits = SandboxLimits(), workers: int | None = None
             ) -> list[SandboxResult]:
    """`run_python` on each source, `workers` at a time (default: the CPUs); results in order."""
    workers = workers or max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: run_python(s, limits), sources))


def _our_python() -> str:
    import sys

    return sys.executable


def _exited_within(process: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for the process to end, at most `timeout_s`; whether it ended. Woken by its exit (a pidfd) where the
    kernel has them: `Popen.wait(timeout)` polls with sleeps that double up to 50 ms, which here added ~20 ms to
    a 30 ms check and left the core idle meanwhile."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):          # no pidfd here: the polling wait
        try:
            process.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)
    if ready:
        process.wait()                         # reap it (it has exited: returns at once)
    return bool(ready)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)      # its session: unshare, the reaper and (PID ns) all it started
    except ProcessLookupError:
        pass
    process.wait()


def _read_cut(path: Path, limit: int, head: bool) -> str:
    """The first (or last) `limit` characters of an output file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if not head:
            f.seek(max(0, size - limit * 4 - 4))
        text = f.read(limit * 4 + 4).decode("utf-8", errors="replace")
    if len(text) <= limit and size <= limit * 4 + 4:
        return text
    return text[:limit] + "\n[... cut]" if head else "[cut ...]\n" + text[-limit:]


def _classify(exit_code, timed_out, seconds, stdout, stderr, mode) -> SandboxResult:
    def result(status, stopped_by=None):
        code = exit_code if exit_code is not None and exit_code >= 0 else None
        return SandboxResult(status, code, round(seconds, 3), stopped_by, stdout, stderr, mode)

    if timed_out:
        return result("timeout", "wall_clock")
    if exit_code is None:
        return result("error", "sandbox")
    if exit_code == 0:
        return result("passed")
    if exit_code < 0:
        sig = -exit_code
        stopped = {signal.SIGXCPU: "cpu_time", signal.SIGXFSZ: "file_size"}.get(sig, f"signal {sig}")
        return result("timeout" if sig == signal.SIGXCPU else "limit", stopped)
    tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if tail.startswith("MemoryError"):
        return result("limit", "memory")
    if tail.startswith("BlockingIOError") and "Resource temporarily unavailable" in tail:
        return result("limit", "processes")              # fork() refused at the process limit
    if "File too large" in tail:
        return result("limit", "file_size")              # python ignores SIGXFSZ: the write fails instead
    return result("failed")
