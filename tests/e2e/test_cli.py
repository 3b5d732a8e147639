"""The `rlhf` command as a user runs it: --help, one-line errors with exit code 2 and nothing left in the run
directory, a reward function that raises mid-run, and a wandb offline run that never writes the API key."""
import json
import os
import subprocess
import sys

import pytest

ENV = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"} | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def rlhf(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout)


def error_line(result):
    lines = [l for l in result.stderr.splitlines() if l.startswith("rlhf ")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_help_for_every_subcommand():
    for command in ("ppo", "bench", "config"):
        result = rlhf(command, "--help")
        assert result.returncode == 0 and "usage: rlhf " + command in result.stdout
    reference = rlhf("config").stdout
    assert "ppo.kl_coef = 0.02: Initial KL coefficient beta." in reference


@pytest.mark.parametrize("args,expected", [
    (["--ppo.kl_cof", "0.1"], "ppo.kl_cof: unknown key"),
    (["--rollout.prompts_per_step", "-1"], "rollout.prompts_per_step"),
    (["--data.prompts", "{tmp}/missing.jsonl"], "missing.jsonl: cannot load"),
    (["--data.prompts", "{tmp}/bad.jsonl"], "bad.jsonl: line 2: invalid JSON"),
    (["--data.prompts", "{tmp}/bad.jsonl", "--data.input_key", "question"], "bad.jsonl: line 2"),
    (["--data.prompts", "{tmp}/long.jsonl", "--data.max_prompt_length", "8"], "long.jsonl: row 1: prompt has 20 tokens"),
    (["--reward.function", "nowhere:fn"], "cannot import module 'nowhere'"),
])
def test_bad_input_fails_early_with_one_line_and_writes_nothing(tmp_path, args, expected):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    (tmp_path / "long.jsonl").write_text('{"prompt": "short"}\n{"prompt": "' + "x" * 20 + '"}\n')
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    line = error_line(rlhf("ppo", "--run.output_dir", str(tmp_path / "runs"), *args))
    assert expected in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_raising_reward_function_stops_the_run_with_one_line(tmp_path):
    module = tmp_path / "my_rewards.py"
    module.write_text("def broken(prompts, responses):\n    return [1.0] * (len(responses) - 1)\n")
    env = {**ENV, "PYTHONPATH": f"{tmp_path}:{os.getcwd()}"}
    result = rlhf("ppo", "--run.output_dir", str(tmp_path / "runs"), "--reward.function", "my_rewards:broken",
                  "--logging.wandb_mode", "disabled", env=env)
    line = error_line(result)
    assert "reward.function 'my_rewards:broken' returned shape (63,); expected (64,)" in line
    assert not (tmp_path / "runs" / "ppo-default").exists()


@pytest.mark.slow
def test_wandb_offline_run_never_writes_the_api_key(tmp_path):
    secret = "0123456789abcdef0123456789abcdef01234567"
    env = {**ENV, "WANDB_API_KEY": secret}
    result = rlhf("ppo", "--run.output_dir", str(tmp_path), "--run.num_steps", "2", "--logging.wandb_mode", "offline",
                  "--checkpoint.export_hf", "false", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "ppo-default"
    assert list(run_dir.glob("wandb/offline-run-*"))
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
