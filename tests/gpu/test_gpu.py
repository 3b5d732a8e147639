"""GPU checks: NCCL is chosen, bf16 is the auto dtype, and a bf16 PPO run trains. Skipped without CUDA."""
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_backend_and_dtype_on_gpu():
    from actors.base import distributed_backend
    from rlhf.models import torch_dtype

    assert distributed_backend() == "nccl"
    assert torch_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_bf16_ppo_run_on_gpu(tmp_path, model_cache, ray_cluster):
    from launch.ppo import run_ppo
    from launch.runlog import read_metrics
    from tests.conftest import small_config

    gpu = {"num_gpus": 0.2, "num_cpus": 1}
    cfg = small_config(tmp_path, model_cache, "gpu", run__num_steps=3, precision__dtype="bf16",
                       actors={role: dict(gpu) for role in ("policy", "value", "reference", "reward", "rollout")})
    rows = read_metrics(run_ppo(cfg))
    assert len(rows) == 3 and all(row["policy/grad_norm"] > 0 for row in rows)
