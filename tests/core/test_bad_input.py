"""Bad input caught before any actor starts, in one line that names the key or the file and row: paths that do
not exist, model folders that are not models, reward functions that fail on a trial call, run directories that
already hold a run; and a failed start leaves no folder behind."""
import re

import pytest

from launch.runlog import RunDirError, cleaned_up_if_never_started, prepare_run_dir
from rlhf.config import Config, build_config, for_stage
from rlhf.data.loading import DataError, load_rows
from rlhf.data.prompts import load_prompt_texts
from rlhf.models import ModelLoadError, resolve_model_path
from rlhf.reward_function import RewardFunctionError, probe_reward_function


def test_missing_local_paths_say_no_such_file(tmp_path):
    missing = str(tmp_path / "data" / "prompts.jsonl")
    with pytest.raises(DataError, match=f"^data.prompts: no such file or directory: {missing}$"):
        load_prompt_texts(missing, "prompt")
    with pytest.raises(DataError, match="^sft.data: no such file or directory: ./demos.jsonl$"):
        load_rows("./demos.jsonl", "demonstrations", key="sft.data")
    with pytest.raises(ModelLoadError, match=f"^model.reference: no such file or directory: {tmp_path}/sft/best_hf$"):
        resolve_model_path(str(tmp_path / "sft" / "best_hf"), str(tmp_path), key="model.reference")
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(ModelLoadError, match="reward.model: .*not_a_model holds no config.json"):
        resolve_model_path(str(tmp_path / "not_a_model"), str(tmp_path), key="reward.model")
    assert resolve_model_path("org/name", str(tmp_path)) == "org/name"     # a hub name is left to the loader


def test_reward_function_is_tried_on_sample_rows(tmp_path, monkeypatch):
    (tmp_path / "trial_rewards.py").write_text(
        "def raises(prompts, responses):\n    raise KeyError('answer')\n"
        "def short(prompts, responses):\n    return [1.0] * (len(responses) - 1)\n"
        "def nan(prompts, responses):\n    return [float('nan')] * len(responses)\n"
        "def fine(prompts, responses):\n    return [0.5] * len(responses)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = ["a", "b", "c", "d"]
    for name, message in (("raises", "raised KeyError: 'answer'"), ("short", "returned shape (3,); expected (4,)"),
                          ("nan", "returned a non-finite score at index 0")):
        with pytest.raises(RewardFunctionError, match=re.escape(f"trial_rewards:{name}' {message}")):
            probe_reward_function(f"trial_rewards:{name}", rows, rows)
    probe_reward_function("trial_rewards:fine", rows, rows)


def test_run_directory_that_holds_a_run_is_refused(tmp_path):
    cfg = for_stage(build_config({"run": {"output_dir": str(tmp_path)}}), "sft")
    assert prepare_run_dir(cfg, False, lambda: False) == tmp_path / "sft-default"
    (tmp_path / "sft-default").mkdir()
    prepare_run_dir(cfg, False, lambda: False)                      # empty: fine
    (tmp_path / "sft-default" / "metrics.jsonl").write_text("")
    with pytest.raises(RunDirError, match="sft-default already holds a run; pass --resume"):
        prepare_run_dir(cfg, False, lambda: False)
    with pytest.raises(RunDirError, match="--resume: no complete checkpoint in"):
        prepare_run_dir(cfg, True, lambda: False)


def test_failed_start_removes_the_folders_it_made(tmp_path):
    run_dir = tmp_path / "runs" / "deep" / "ppo-default"
    with pytest.raises(RuntimeError):
        with cleaned_up_if_never_started(run_dir):
            run_dir.mkdir(parents=True)
            raise RuntimeError("placement failed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with cleaned_up_if_never_started(tmp_path / "kept" / "run"):
            (tmp_path / "kept" / "run").mkdir()
            raise RuntimeError("actor died")
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and not list((tmp_path / "kept").iterdir())
    assert for_stage(Config(), "rm").run_dir.name == "rm-default"
