"""The InstructGPT pipeline end to end on the bundled toy task: SFT -> RM -> PPO, stopped during PPO and resumed
at that stage; PPO beats SFT on the hidden ground truth. (SFT choosing its checkpoint by sampled reward is in
test_stages.py.)"""
import json

import pytest

from launch.pipeline import run_pipeline
from launch.runlog import read_metrics
from rlhf.config import build_config, bundled_default

pytestmark = pytest.mark.slow


def pipeline_config(tmp_path, model_cache, ground_truth=True, **ppo_run):
    tree = bundled_default("pipeline")
    tree["run"].update(output_dir=str(tmp_path), name="pipe", **ppo_run)
    if not ground_truth:
        tree["pipeline"]["ground_truth"] = None
    tree["model"]["cache_dir"] = model_cache
    tree["logging"] = {"wandb_mode": "disabled", "progress_bar": False}
    tree["pipeline"]["eval_samples"] = 96
    return build_config(tree, "test")


def test_pipeline_ppo_beats_sft_and_resumes_at_the_stopped_stage(tmp_path, model_cache, ray_cluster, capsys):
    # the first call stops after 50 PPO steps; its table is left out (the resumed call scores every policy)
    first = run_pipeline(pipeline_config(tmp_path, model_cache, ground_truth=False, num_steps=50))
    root = tmp_path / "pipe"
    assert "ground_truth_sft" not in first and first["rm_heldout_accuracy"] > 0.85
    normalization = json.loads((root / "rm" / "final_hf" / "reward_normalization.json").read_text())
    assert normalization["scale"] == 1.0 and normalization["shift"] != 0.0

    # the pipeline "stopped" during PPO: its last checkpoint is step 50 and the stage is not marked done
    (root / "ppo" / "stage_done.json").unlink()
    sft_mtime = (root / "sft" / "best_hf" / "model.safetensors").stat().st_mtime
    report = run_pipeline(pipeline_config(tmp_path, model_cache, num_steps=100), resume=True)
    out = capsys.readouterr().out
    assert "stage sft already done" in out and "stage rm already done" in out
    assert (root / "sft" / "best_hf" / "model.safetensors").stat().st_mtime == sft_mtime
    steps = [row["step"] for row in read_metrics(root / "ppo")]
    assert steps == list(range(1, 101))

    assert report["ground_truth_sft"] > report["ground_truth_base"] + 0.3, report   # SFT learned from demonstrations
    assert report["ground_truth_ppo"] > report["ground_truth_sft"] + 0.1, report
    assert report["kl_ppo_to_sft"] > 0
    assert "ground truth, PPO policy" in out and json.loads((root / "report.json").read_text()) == report
