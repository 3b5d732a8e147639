"""The `rlhf` command as a user runs it: --help, and one-line errors with exit code 2 before any actor starts and no
folder left behind. Models go to the test cache. Most calls run `launch.cli.main` in this process (the same code
path, without paying the imports per call); whole runs are in the other end-to-end tests."""
import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from launch.cli import main

ENV = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"} | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def with_cache(args) -> list[str]:
    cache = ["--model.cache_dir", os.path.join(os.environ["RLHF_TEST_CACHE"], "models")]
    return list(args) + (cache if args and args[0] in ("ppo", "sft", "rm", "pipeline", "bench") else [])


def rlhf(*args, env=None, timeout=600):
    """`rlhf ARGS` in a new process, as typed in a shell."""
    return subprocess.run([sys.executable, "-m", "launch.cli", *with_cache(args)], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout)


def rlhf_here(*args):
    """`rlhf ARGS` through `main` in this process: exit code, stdout and stderr like `rlhf`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(with_cache(args))
        except SystemExit as exit_:
            code = exit_.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def error_line(result):
    lines = [l for l in result.stderr.splitlines() if l.startswith("rlhf ")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_help_for_every_subcommand():
    for command in ("ppo", "sft", "rm", "pipeline", "bench", "config"):
        result = rlhf_here(command, "--help")
        assert result.returncode == 0 and "usage: rlhf " + command in result.stdout
    reference = rlhf("config").stdout         # and once through the real entry point
    assert "ppo.kl_coef = 0.02: Initial KL coefficient beta." in reference


@pytest.mark.parametrize("args,expected", [
    (["--ppo.kl_cof", "0.1"], "ppo.kl_cof: unknown key"),
    (["--rollout.prompts_per_step", "-1"], "rollout.prompts_per_step"),
    (["--data.prompts", "{tmp}/missing.jsonl"], "data.prompts: no such file or directory: {tmp}/missing.jsonl"),
    (["--model.policy", "{tmp}/sft/best_hf"], "model.policy: no such file or directory: {tmp}/sft/best_hf"),
    (["--model.reference", "{tmp}"], "model.reference: {tmp} holds no config.json"),
    (["--reward.function", "tests.e2e.flaky_rewards:nowhere"], "has no function 'nowhere'"),
    (["--data.prompts", "{tmp}/bad.jsonl"], "bad.jsonl: line 2: invalid JSON"),
    (["--data.prompts", "{tmp}/bad.jsonl", "--data.input_key", "question"], "bad.jsonl: line 2"),
    (["--data.prompts", "{tmp}/long.jsonl", "--data.max_prompt_length", "8"], "long.jsonl: row 2: prompt has 20 tokens"),
    (["--reward.function", "nowhere:fn"], "cannot import module 'nowhere'"),
])
def test_bad_input_fails_early_with_one_line_and_writes_nothing(tmp_path, args, expected):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    (tmp_path / "long.jsonl").write_text('{"prompt": "short"}\n{"prompt": "' + "x" * 20 + '"}\n')
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    expected = expected.replace("{tmp}", str(tmp_path))
    line = error_line(rlhf_here("ppo", "--run.output_dir", str(tmp_path / "runs"), *args))
    assert expected in line
    assert not (tmp_path / "runs").exists()


def test_wrong_reward_function_and_taken_run_directory_fail_before_start(tmp_path, monkeypatch):
    module = tmp_path / "my_rewards.py"
    module.write_text("def broken(prompts, responses):\n    return [1.0] * (len(responses) - 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    started = time.monotonic()
    result = rlhf_here("ppo", "--run.output_dir", str(tmp_path / "runs"), "--reward.function", "my_rewards:broken")
    line = error_line(result)
    assert "reward.function 'my_rewards:broken' returned shape (3,); expected (4,)" in line and "before start" in line
    assert time.monotonic() - started < 60 and not (tmp_path / "runs").exists()
    (tmp_path / "runs" / "sft-default").mkdir(parents=True)
    (tmp_path / "runs" / "sft-default" / "metrics.jsonl").write_text("")
    line = error_line(rlhf_here("sft", "--run.output_dir", str(tmp_path / "runs")))
    assert "sft-default already holds a run; pass --resume" in line
    # rows counted from 1, like lines: the second line of the file is row 2
    (tmp_path / "cmp.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
                                        '{"prompt": "q", "responses": ["a", "b"], "ranking": [2, 1]}\n')
    line = error_line(rlhf_here("rm", "--run.output_dir", str(tmp_path / "runs"), "--rm.data",
                                str(tmp_path / "cmp.jsonl")))
    assert "cmp.jsonl: row 2: list column 'ranking' is not named by the config" in line
    assert "set rm.ranks_key: ranking" in line
    # a model far too large for this machine is refused from its config in seconds: no model made, no folder
    started = time.monotonic()
    huge = ["--model.tiny.num_layers", "64", "--model.tiny.hidden_size", "4096"]
    for stage in ("ppo", "sft"):
        line = error_line(rlhf_here(stage, "--run.output_dir", str(tmp_path / "huge"), *huge))
        assert "memory: this plan needs about" in line and "GiB of host memory" in line and "zero_stage" in line
    assert time.monotonic() - started < 60 and not (tmp_path / "huge").exists()
    assert not any("64x4096" in p.name for p in (Path(os.environ["RLHF_TEST_CACHE"]) / "models").iterdir())
    line = error_line(rlhf_here("sft", "--run.output_dir", str(tmp_path / "new"), "--sft.validation_fraction", "0"))
    assert "sft.validation_fraction 0.0 of 2000 demonstrations holds none out for validation" in line
    # the pipeline checks all three stage configs, as they will run, before its first stage starts
    line = error_line(rlhf_here("pipeline", "--run.output_dir", str(tmp_path / "new"), "--ppo.num_minibatches", "3"))
    assert "config error for rlhf ppo: ppo.num_minibatches" in line
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_weight_sync_bench_times_both_ways(tmp_path, ray_cluster):
    result = rlhf_here("bench", "--weight-sync", "--steps", "1", "--run.output_dir", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr[-2000:]
    header, *rows = result.stdout.strip().splitlines()[-3:]
    assert "MB of weights" in header and "policy 1 rank(s) ZeRO-" in header
    assert [row.split()[0] for row in rows] == ["collective", "object_store"]
    assert all(float(row.split()[1]) > 0 for row in rows)
    assert not (tmp_path / "runs").exists()      # a benchmark of the sync writes no run


@pytest.mark.slow
def test_memory_bench_reports_each_cell(tmp_path, ray_cluster):
    result = rlhf_here("bench", "--memory", "--zero-stages", "3", "--ranks", "2", "--run.output_dir",
                       str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| 3 |")]
    assert [int(row[1]) for row in rows] == [2]
    for row in rows:
        peak, before, share = (float(cell) for cell in row[2:5])
        assert peak > before > 0 and share == pytest.approx(peak - before, abs=1)
    assert "--ranks: expected comma-separated integers, got 'one'" in error_line(rlhf_here("bench", "--memory",
                                                                                          "--ranks", "one"))
