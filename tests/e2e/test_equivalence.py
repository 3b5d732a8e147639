"""Scaling changes nothing but speed: with the same seed and global batch, 1 vs 2 policy and value actors and
ZeRO stages 0, 2 and 3 (with and without CPU offload) give the same rewards and losses step by step, with the
driver's state (running reward normalization, adaptive KL) in play; and the memory savers change nothing either."""
import pytest

pytestmark = pytest.mark.slow

COMPARED = ["reward/score_mean", "kl/sequence_mean", "kl/coef", "policy/loss", "policy/pg_loss", "policy/entropy",
            "policy/approx_kl", "value/loss", "value/mean", "policy/grad_norm"]


# ZeRO-1 is DeepSpeed's stage-1/2 optimizer without gradient partitioning: stage 2 covers that code path (here
# with its optimizer offloaded to the CPU; the resume test reuses this run). The ZeRO-3 case also turns on the
# memory savers (gradient checkpointing, chunked log-probs), which change no number.
@pytest.mark.parametrize("actors,stage,offload,savers", [(2, 0, False, False), (2, 3, False, True),
                                                         (1, 3, True, False), (2, 2, True, False)])
def test_same_metrics_whatever_the_layout(layout_run, actors, stage, offload, savers):
    baseline = layout_run(1, 0)
    metrics = layout_run(actors, stage, offload, savers)
    assert len(metrics) == len(baseline) == 4
    # training moved the policy: step 3's samples differ from step 1's, so later steps test the updates
    assert baseline[0]["kl/sequence_mean"] == 0.0 and baseline[2]["kl/sequence_mean"] != 0.0
    # synchronous mode: the rollout actors sample from exactly the weights the policy scores with, every step
    assert max(row["rollout/logprob_gap"] for row in metrics) < 1e-4
    for expected, got in zip(baseline, metrics):
        for key in COMPARED:
            assert got[key] == pytest.approx(expected[key], rel=2e-4, abs=2e-5), (expected["step"], key)
