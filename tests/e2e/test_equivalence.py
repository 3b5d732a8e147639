"""Scaling changes nothing but speed: with the same seed and global batch, 1 vs 2 policy and value actors and
ZeRO stages 0-3 (with and without CPU offload) give the same rewards and losses step by step."""
import pytest

from launch.ppo import run_ppo
from launch.runlog import read_metrics
from tests.conftest import small_config

pytestmark = pytest.mark.slow

COMPARED = ["reward/score_mean", "kl/sequence_mean", "policy/loss", "policy/pg_loss", "policy/entropy",
            "policy/approx_kl", "value/loss", "value/mean", "policy/grad_norm"]


def run(tmp_path, model_cache, name, actors, stage, offload=False, export=False):
    layout = dict(actors__policy__num_actors=actors, actors__value__num_actors=actors,
                  deepspeed__policy__zero_stage=stage, deepspeed__value__zero_stage=stage,
                  checkpoint__export_hf=export)
    if offload:
        layout.update(deepspeed__policy__offload_optimizer=True, deepspeed__value__offload_optimizer=True)
        if stage == 3:
            layout.update(deepspeed__policy__offload_params=True)
    cfg = small_config(tmp_path, model_cache, name, **layout)
    return read_metrics(run_ppo(cfg))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, model_cache, ray_cluster):
    return run(tmp_path_factory.mktemp("base"), model_cache, "base", actors=1, stage=0)


@pytest.mark.parametrize("actors,stage,offload", [(2, 0, False), (2, 1, False), (2, 2, False), (2, 3, False),
                                                  (1, 3, True), (2, 2, True)])
def test_same_metrics_whatever_the_layout(baseline, tmp_path, model_cache, actors, stage, offload):
    metrics = run(tmp_path, model_cache, f"a{actors}z{stage}o{int(offload)}", actors, stage, offload)
    assert len(metrics) == len(baseline) == 3
    # training moved the policy: step 3's samples differ from step 1's, so later steps test the updates
    assert baseline[0]["kl/sequence_mean"] == 0.0 and baseline[2]["kl/sequence_mean"] != 0.0
    for expected, got in zip(baseline, metrics):
        for key in COMPARED:
            assert got[key] == pytest.approx(expected[key], rel=2e-4, abs=2e-5), (expected["step"], key)
