"""The sandbox against runaway and hostile programs: each is stopped and reported, and nothing outside it changes.
Isolation by namespaces and a user of its own needs root (CI's machine has it); without, those checks skip."""
import json
import os
import pwd
import socket
import subprocess
import sys
import uuid

import psutil
import pytest

from rlhf.sandbox import SandboxLimits, isolation, run_many, run_python

ISOLATED = isolation() == "namespaces+user"
needs_isolation = pytest.mark.skipif(not ISOLATED, reason="namespaces and a user of its own need root")


def test_ordinary_programs_pass_or_fail_with_their_output():
    passed, failed = run_many(["print('hello')", "def f():\n    return 1\nassert f() == 2, 'wrong answer'"])
    assert (passed.status, passed.exit_code, passed.stdout, passed.stopped_by) == ("passed", 0, "hello\n", None)
    assert (failed.status, failed.exit_code) == ("failed", 1)
    assert failed.stderr.strip().endswith("AssertionError: wrong answer")


def test_runaway_programs_are_stopped_and_named():
    limits = SandboxLimits(timeout_s=2, memory_mb=512, output_chars=100)
    loop, allocation, big_file, chatty = run_many(
        ["while True:\n    pass", "x = bytearray(4 << 30)", "open('f', 'wb').write(b'0' * (40 << 20))",
         "print('x' * 100000)"], limits)
    assert (loop.status, loop.stopped_by) == ("timeout", "wall_clock") and loop.seconds < 10
    assert (allocation.status, allocation.stopped_by) == ("limit", "memory")
    assert (big_file.status, big_file.stopped_by) == ("limit", "file_size")
    assert chatty.status == "passed" and chatty.stdout == "x" * 100 + "\n[... cut]"


def test_the_wait_without_pidfds_still_stops_a_loop_and_returns_a_finished_program(monkeypatch):
    def no_pidfd(pid):
        raise OSError("no pidfd")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)             # an older kernel: the polling wait
    limits = SandboxLimits(timeout_s=1)
    loop, quick = run_many(["while True:\n    pass", "print(6 * 7)"], limits)
    assert (loop.status, loop.stopped_by) == ("timeout", "wall_clock") and 1 <= loop.seconds < 10
    assert (quick.status, quick.stdout) == ("passed", "42\n")


@needs_isolation
def test_fork_bomb_stops_at_the_process_limit_and_leaves_no_process():
    result = run_python("import os\nwhile True:\n    os.fork()", SandboxLimits(timeout_s=5, max_processes=16))
    assert (result.status, result.stopped_by) == ("limit", "processes")
    assert result.user >= 61000
    assert not [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == result.user]


@needs_isolation
def test_hostile_programs_cannot_reach_the_network_secrets_files_or_processes(tmp_path, monkeypatch):
    server = socket.create_server(("127.0.0.1", 0))           # a port that is open on this machine
    port = server.getsockname()[1]
    monkeypatch.setenv("RLHF_TEST_SECRET", "s3cret")
    escape = f"/tmp/rlhf-escape-{uuid.uuid4().hex}"
    ours = tmp_path / "ours.txt"
    ours.write_text("keep")
    programs = [
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)",
        "import os\nprint(sorted(os.environ))\nprint(os.environ.get('RLHF_TEST_SECRET'))",
        f"open({escape!r}, 'w').write('x')\nprint(open({escape!r}).read())",
        f"open({str(ours)!r}, 'w').write('lost')",
        "import os, signal\nos.kill(-1, signal.SIGKILL)",
        "import os, signal\nprint(os.getpid(), os.getppid())\nos.kill(os.getppid(), signal.SIGKILL)",
    ]
    network, environment, tmp_write, our_file, kill_all, kill_parent = run_many(programs)
    server.close()
    assert network.status == "failed" and "Network is unreachable" in network.stderr
    assert environment.stdout == "['HOME', 'LANG', 'PATH', 'PYTHONHASHSEED', 'TMPDIR']\nNone\n"
    assert tmp_write.status == "passed" and not os.path.exists(escape)       # its own /tmp, gone with it
    assert our_file.status == "failed" and ours.read_text() == "keep"
    assert "ProcessLookupError" in kill_all.stderr        # every process: none it may signal but itself
    assert kill_parent.stdout.split() == ["2", "1"] and "Operation not permitted" in kill_parent.stderr
    assert psutil.Process().is_running()


def test_rlhf_sandbox_run_prints_one_json_line(tmp_path):
    program = tmp_path / "answer.py"
    program.write_text("import sys\nprint(6 * 7)\nsys.exit(3)")
    done = subprocess.run([sys.executable, "-m", "launch.cli", "sandbox", "run", str(program), "--timeout", "5"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and len(done.stdout.splitlines()) == 1
    result = json.loads(done.stdout)
    assert (result["status"], result["exit_code"], result["stdout"]) == ("failed", 3, "42\n")
    assert result["isolation"] == isolation()
