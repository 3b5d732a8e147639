"""`rlhf bench --floor`: the one-process floor does the distributed run's work (the same samples, rewards, KL and
values step by step, so its updates are the same too), and the command prints both sides and the ratio; the
measured runs' folders are removed afterwards (the scaling sweep's too)."""
import tempfile

import pytest

from tests.conftest import layout_config

pytestmark = pytest.mark.slow

COMPARED = ["reward/score_mean", "kl/sequence_mean", "kl/coef", "value/mean", "advantages/mean", "returns/mean",
            "response/length_mean"]


def test_floor_takes_the_distributed_runs_steps(layout_run, tmp_path, model_cache):
    from launch.ppo import load_prompts, role_paths
    from rlhf.config import for_stage
    from rlhf.floor import FloorPPO
    from rlhf.models import load_tokenizer

    distributed = layout_run(1, 0)            # 4 steps on the actors (shared with the equivalence tests)
    cfg = for_stage(layout_config(tmp_path, model_cache, "floor", 1, 0), "ppo")
    paths = role_paths(cfg)
    floor = FloorPPO(cfg, paths, load_prompts(cfg, load_tokenizer(paths["policy"])).ids)
    # the policy moved: later steps sample from updated weights, so equal numbers there mean equal updates
    assert distributed[0]["kl/sequence_mean"] == 0.0 and distributed[3]["kl/sequence_mean"] != 0.0
    for expected in distributed:
        _, got = floor.step(expected["step"])
        for key in COMPARED:
            assert got[key] == pytest.approx(expected[key], rel=2e-4, abs=2e-5), (expected["step"], key)
        assert {"time/generate", "time/score", "time/advantages", "time/train", "time/step"} <= set(got)


def test_bench_floor_prints_both_sides_and_the_ratio(ray_cluster, tmp_path, model_cache, capsys, monkeypatch):
    from launch.bench import run_bench
    from tests.conftest import small_config

    scratch = tmp_path / "scratch"           # where the measured runs' folders are made (tempfile's folder)
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    cfg = small_config(tmp_path, model_cache, "bench")
    small = ["--model.tiny.num_layers", "1", "--model.tiny.hidden_size", "32", "--rollout.prompts_per_step", "8",
             "--rollout.n_samples_per_prompt", "2", "--deepspeed.policy.micro_batch_size", "8",
             "--deepspeed.value.micro_batch_size", "8", "--ppo.num_minibatches", "2"]
    results = run_bench(cfg, steps=1, explicit_overrides=small, workload="default", floor=True, rounds=2)
    distributed, floor = results["default"]["distributed"][0], results["default"]["floor"][0]
    for report in (distributed, floor):
        assert report["throughput/samples_per_s"] > 0 and 0 < report["peak_share/train"] < 1
    first, last = results["default"]["ratios"]        # one ratio per round, the last round's reports returned
    assert last == distributed["throughput/samples_per_s"] / floor["throughput/samples_per_s"]
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out if line.startswith("rlhf bench")] == \
        ["rlhf bench default round 1/2", "rlhf bench default round 2/2"]
    assert out[-1] == f"ratio distributed/floor: {(first + last) / 2:.2f} (default; median of 2 rounds: " \
        f"{first:.2f} {last:.2f})"
    header = next(line for line in out if line.strip().startswith("distributed"))
    assert header.split() == ["distributed", "floor"]
    sync = next(line.split() for line in out if line.strip().startswith("time/weight_sync"))
    assert float(sync[1]) > 0 and sync[2] == "-"              # the floor has no rollout copy to sync
    assert not any(scratch.iterdir())                          # each measured run's folder is gone


def test_scaling_sweep_runs_each_cell_with_its_actor_counts(ray_cluster, tmp_path, model_cache, capsys, monkeypatch):
    from launch.bench_scaling import run_scaling
    from tests.conftest import small_config

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    cfg = small_config(tmp_path, model_cache, "scaling")
    small = ["--model.tiny.num_layers", "1", "--model.tiny.hidden_size", "32", "--rollout.prompts_per_step", "8",
             "--rollout.n_samples_per_prompt", "2", "--deepspeed.policy.micro_batch_size", "4",
             "--deepspeed.value.micro_batch_size", "4", "--ppo.num_minibatches", "2"]
    rows = run_scaling(cfg, [2], steps=1, explicit_overrides=small)
    assert [(r["rollout"], r["policy"]) for r in rows] == [(2, 2)] and rows[0]["throughput/samples_per_s"] > 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].split()[:2] == ["2", "2"]
    assert (tmp_path / "bench-scaling" / "samples_per_s_default.png").stat().st_size > 1000
    assert not any(scratch.iterdir())
