"""GPU checks: NCCL is chosen, bf16 is the auto dtype, and a bf16 PPO run trains; with 3 GPUs, a ZeRO-3 policy on
2 ranks built partitioned and its collective weight sync over NCCL. Skipped without CUDA (or enough GPUs)."""
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_backend_and_dtype_on_gpu():
    from actors.base import distributed_backend
    from rlhf.models import torch_dtype

    assert distributed_backend() == "nccl"
    assert torch_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_ranking_scores_share_prefixes_on_gpu_in_bf16(tmp_path):
    from rlhf.batches import collate_rankings, flatten_rankings, unflatten_scores
    from rlhf.forward import ranking_scores, token_scores
    from rlhf.models import load_scalar_model, make_tiny_model

    model = load_scalar_model(str(make_tiny_model(tmp_path / "m")), torch.bfloat16, "sdpa").cuda().train()
    batch = collate_rankings([([[5, 6, 7, 8, 9], [5, 6, 7, 11]], [1, 2]),
                              ([[3, 4, 12, 13, 14, 15], [3, 4, 12, 20], [3, 4, 21]], [3, 1, 2])], pad_id=0)
    device = torch.device("cuda")
    shared = ranking_scores(model, batch, device)
    ids, mask, valid = flatten_rankings(batch)
    whole = unflatten_scores(token_scores(model, ids, mask, device).float(), valid.to(device))
    shared.sum().backward()
    assert torch.allclose(shared, whole, atol=2e-2) and shared[0, 2] == 0


def test_bf16_ppo_run_on_gpu(tmp_path, model_cache, ray_cluster):
    from launch.ppo import run_ppo
    from launch.runlog import read_metrics
    from tests.conftest import small_config

    gpu = {"num_gpus": 0.2, "num_cpus": 1}      # every role shares one GPU: weights go through the object store
    cfg = small_config(tmp_path, model_cache, "gpu", run__num_steps=3, precision__dtype="bf16",
                       rollout__weight_sync="object_store",
                       actors={role: dict(gpu) for role in ("policy", "value", "reference", "reward", "rollout")})
    rows = read_metrics(run_ppo(cfg))
    assert len(rows) == 3 and all(row["policy/grad_norm"] > 0 for row in rows)


@pytest.mark.skipif(torch.cuda.device_count() < 3, reason="needs 3 GPUs: 2 policy ranks and a rollout actor")
def test_zero3_policy_on_two_gpus_syncs_to_rollout_over_nccl(tmp_path, model_cache, ray_cluster):
    from actors.group import RoleGroups, RoleSpec
    from actors.policy import PolicyWorker
    from actors.rollout import RolloutWorker
    from actors.weight_sync import CollectiveSync
    from rlhf.config import RoleResources
    from rlhf.models import make_tiny_model, resolve_model_path
    from tests.conftest import small_config

    cfg = small_config(tmp_path, model_cache, "gpu-sync", precision__dtype="bf16", deepspeed__policy__zero_stage=3,
                       actors__policy__num_actors=2, actors__policy__num_gpus=1, actors__rollout__num_gpus=1,
                       rollout__weight_sync_bucket_mb=1 / 64)
    path = resolve_model_path("tiny", cfg.model.cache_dir, cfg.model.tiny)
    other = str(make_tiny_model(tmp_path / "other", seed=1))         # the rollout starts from other weights
    specs = [RoleSpec("policy", PolicyWorker, (path,), True, RoleResources(num_actors=2, num_gpus=1)),
             RoleSpec("rollout", RolloutWorker, (other, path), resources=RoleResources(num_gpus=1))]
    with RoleGroups(cfg, specs) as groups:
        counts = groups["policy"].run("parameter_counts")
        assert all(c["built_partitioned"] and c["local"] < c["full"] for c in counts)
        sync = CollectiveSync(groups["policy"], groups["rollout"], cfg)
        assert len(sync.plan) > 1 and sync()["time/weight_sync"] > 0
        synced = groups["rollout"].run("state_dict")[0]
        expected = load_state(path)
        for name, tensor in expected.items():
            assert torch.equal(synced[name].float(), tensor.to(torch.bfloat16).float()), name


def load_state(path):
    from rlhf.models import load_causal_lm

    return load_causal_lm(path).state_dict()


def test_bench_floor_on_gpu_reports_bf16_shares_and_ratio(tmp_path, model_cache, ray_cluster, capsys):
    from launch.bench import run_bench
    from tests.conftest import small_config

    gpu = {"num_gpus": 0.2, "num_cpus": 1}
    cfg = small_config(tmp_path, model_cache, "gpu-bench", precision__dtype="bf16",
                       rollout__weight_sync="object_store",
                       actors={role: dict(gpu) for role in ("policy", "value", "reference", "reward", "rollout")})
    results = run_bench(cfg, steps=1, workload="default", floor=True)      # the floor runs on the same GPU
    distributed, floor = results["default"]["distributed"][0], results["default"]["floor"][0]
    for report in (distributed, floor):
        assert 0 < report["peak_share/train"] < 1 and report["throughput/generated_tokens_per_s"] > 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ratio distributed/floor: ")
