"""SFT and reward-model training are data parallel: 1 actor and 2 actors under ZeRO give the same losses."""
import pytest

from launch.rm import run_rm
from launch.runlog import read_metrics
from launch.sft import run_sft
from rlhf.config import build_config, bundled_default

pytestmark = pytest.mark.slow


def stage_config(tmp_path, model_cache, name, role, actors, stage):
    tree = bundled_default("pipeline")
    tree["run"].update(output_dir=str(tmp_path), name=name)
    tree["model"]["cache_dir"] = model_cache
    tree["logging"] = {"wandb_mode": "disabled", "progress_bar": False}
    tree["checkpoint"] = {"save_at_end": False}
    tree["sft"].update(epochs=0.1, eval_every=3, micro_batch_size=8)
    tree["rm"].update(epochs=0.05, eval_every=3, micro_batch_size=4, normalize="shift_scale", reference_samples=64)
    tree["actors"] = {role: {"num_actors": actors}}
    tree[{"policy": "sft", "reward": "rm"}[role]]["deepspeed"] = {"zero_stage": stage}
    return build_config(tree, "test")


@pytest.mark.parametrize("runner,role,keys", [(run_sft, "policy", ["sft/loss", "sft/val_loss", "sft/grad_norm"]),
                                              (run_rm, "reward", ["rm/loss", "rm/accuracy", "rm/val_accuracy"])])
def test_one_and_two_actors_train_the_same(tmp_path, model_cache, ray_cluster, runner, role, keys):
    single = read_metrics(runner(stage_config(tmp_path / "one", model_cache, "s", role, 1, 0)))
    double = read_metrics(runner(stage_config(tmp_path / "two", model_cache, "s", role, 2, 3 if role == "policy" else 2)))
    assert len(single) == len(double) >= 3
    for a, b in zip(single, double):
        for key in keys:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=2e-4, abs=2e-5), (a["step"], key)
    if role == "reward":
        import json
        norm = [json.loads((tmp_path / d / "s" / "final_hf" / "reward_normalization.json").read_text())
                for d in ("one", "two")]
        assert norm[0]["shift"] == pytest.approx(norm[1]["shift"], rel=5e-3) and norm[0]["scale"] != 1.0
