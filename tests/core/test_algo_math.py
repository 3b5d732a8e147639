"""Every estimator, advantage, loss and whitening function against numbers computed by hand (shown in comments)."""
import math

import pytest
import torch

from rlhf.algo import advantages as adv
from rlhf.algo.kl import AdaptiveKLController, FixedKLController, kl_estimate
from rlhf.algo.logprobs import entropy_from_logits, logprobs_from_logits, response_slice, token_logprobs_and_entropy
from rlhf.algo.losses import (entropy_loss, kl_loss, kwise_ranking_loss, lm_loss, policy_loss, ranking_pairs,
                              value_loss)
from rlhf.algo.masked import RunningMoments, masked_mean, masked_var, masked_whiten
from rlhf.algo.rewards import shape_scores, token_rewards

T = torch.tensor


def close(a, b, tol=1e-5):
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol), (a, b)


def test_kl_estimators():
    # log pi = log .5, log pi_ref = log .25 -> log r = log .5
    lp, ref = T([math.log(0.5)]), T([math.log(0.25)])
    close(kl_estimate(lp, ref, "k1"), [0.693147])            # -log r
    close(kl_estimate(lp, ref, "k2"), [0.240227])            # 0.5 * 0.693147^2
    close(kl_estimate(lp, ref, "k3"), [0.193147])            # (0.5 - 1) + 0.693147
    with pytest.raises(ValueError, match="k9"):
        kl_estimate(lp, ref, "k9")


def test_kl_controllers():
    fixed = FixedKLController(0.1)
    fixed.update(100.0, 64)
    assert fixed.value == 0.1
    up = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    up.update(9.0, 100)          # error clipped to +0.2: 0.1 * (1 + 0.2 * 100 / 10000)
    close(up.value, 0.1002, 1e-9)
    down = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    down.update(3.0, 100)        # error -0.5 clipped to -0.2
    close(down.value, 0.0998, 1e-9)
    restored = AdaptiveKLController(0.5, 1, 1)
    restored.load_state_dict(up.state_dict())
    assert restored.value == up.value


def test_logprobs_use_temperature_and_entropy():
    logits = T([[[0.0, math.log(3.0)]]])
    close(logprobs_from_logits(logits, T([[1]])), [[math.log(0.75)]])
    # T = 2: p ∝ [1, sqrt 3] -> log(1.73205 / 2.73205)
    close(logprobs_from_logits(logits, T([[1]]), temperature=2.0), [[-0.455746]])
    close(entropy_from_logits(T([[[0.0, 0.0]]])), [[math.log(2)]])
    out = torch.arange(10).view(1, 10)
    assert response_slice(out, prompt_length=4, response_length=3).tolist() == [[3, 4, 5]]


def test_chunked_logprobs_and_entropy_match_whole_ones_with_gradients():
    # by hand: positions [0, ln 3] and [0, 0], label 1 at both, T = 1
    logits = T([[[0.0, math.log(3.0)], [0.0, 0.0]]])
    logprobs, entropy = token_logprobs_and_entropy(logits, T([[1, 1]]).long(), chunk_positions=1)
    close(logprobs, [[math.log(0.75), math.log(0.5)]])
    close(entropy, [[-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2)]])
    # random bf16 logits, 7 positions in chunks of 3 (the last one short): values and gradients as computed whole
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2, 7, 11, generator=generator).bfloat16().requires_grad_()
    labels = torch.randint(0, 11, (2, 7), generator=generator)
    whole = (logprobs_from_logits(z, labels, 0.7), entropy_from_logits(z, 0.7))
    chunked = token_logprobs_and_entropy(z, labels, 0.7, chunk_positions=3)
    for a, b in zip(whole, chunked):
        assert b.dtype == torch.float32 and torch.allclose(a, b, atol=1e-6)
    weights = torch.randn(2, 7, generator=generator)
    z = z.detach().float().requires_grad_()          # gradients compared in fp32 (bf16 rounds them to its own ulp)
    whole = (logprobs_from_logits(z, labels, 0.7), entropy_from_logits(z, 0.7))
    chunked = token_logprobs_and_entropy(z, labels, 0.7, chunk_positions=3)
    grad_whole = torch.autograd.grad((whole[0] * weights + whole[1]).sum(), z)[0]
    grad_chunked = torch.autograd.grad((chunked[0] * weights + chunked[1]).sum(), z)[0]
    assert torch.allclose(grad_whole, grad_chunked, atol=1e-6)
    _, no_entropy = token_logprobs_and_entropy(z, labels, with_entropy=False)
    assert not no_entropy.any()


def test_masked_stats_and_whiten():
    x, m = T([[1.0, 2.0, 3.0, 99.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    close(masked_mean(x, m), 2.0)
    close(masked_var(x, m), 1.0)  # unbiased: (1 + 0 + 1) / 2
    close(masked_whiten(x, m), [[-1.0, 0.0, 1.0, 0.0]])
    close(masked_whiten(x, m, shift_mean=False), [[1.0, 2.0, 3.0, 0.0]])


def test_running_moments():
    rm = RunningMoments()
    rm.update(T([1.0, 2.0, 3.0]))
    rm.update(T([4.0, 5.0]))
    close(rm.mean, 3.0)
    close(rm.var, 2.0)  # population variance of 1..5


def test_shape_scores_and_token_rewards():
    scores = shape_scores(T([1.0, 3.0]), T([True, False]), missing_eos_penalty=-1.0, clip=1.5)
    close(scores, [1.0, 1.5])     # [1, 3 - 1] clipped at 1.5
    normalizer = RunningMoments()
    close(shape_scores(T([1.0, 3.0]), T([True, True]), normalizer=normalizer), [-1.0, 1.0])  # mean 2, std 1
    rewards = token_rewards(T([2.0]), T([[0.1, 0.2, 0.3, 0.5]]), T([[1.0, 1.0, 1.0, 0.0]]), kl_coef=0.5)
    close(rewards, [[-0.05, -0.1, 1.85, 0.0]])  # -0.5 * kl, score on the last real token


def test_gae_hand_computed():
    r, v, m = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), torch.ones(1, 3)
    a, ret = adv.gae(r, v, m, gamma=1.0, lam=1.0)
    close(a, [[0.5, 0.4, 0.3]])
    close(ret, [[1.0, 1.0, 1.0]])
    # gamma .9, lam .5: deltas .04, .03, .3 -> A2 = .3, A1 = .03 + .45*.3, A0 = .04 + .45*.165
    a, _ = adv.gae(r, v, m, gamma=0.9, lam=0.5)
    close(a, [[0.11425, 0.165, 0.3]])
    # masked tail: the value after the last real token counts as 0, the masked value 9 is ignored
    a, _ = adv.gae(T([[0.0, 2.0, 5.0]]), T([[0.5, 0.6, 9.0]]), T([[1.0, 1.0, 0.0]]), 1.0, 1.0)
    close(a, [[1.5, 1.4, 0.0]])


def test_critic_free_estimators():
    m = torch.ones(3, 1)
    rewards = T([[1.0], [2.0], [6.0]])
    a, _ = adv.rloo(rewards, m, 3)
    close(a, [[-3.0], [-1.5], [4.5]])   # R_i - mean of the two others
    a, _ = adv.grpo(rewards, m, 3)
    s7 = math.sqrt(7.0)                  # unbiased std of [1, 2, 6]
    close(a, [[-2 / s7], [-1 / s7], [3 / s7]], 1e-4)
    close(adv.discounted_returns(T([[1.0, 0.0, 2.0]]), torch.ones(1, 3), 0.5), [[1.5, 1.0, 2.0]])
    a, ret = adv.reinforce_plus_plus(T([[1.0, 0.0, 2.0]]), torch.ones(1, 3), 0.5)
    close(ret, [[1.5, 1.0, 2.0]])
    close(a, [[0.0, -1.0, 1.0]], 1e-4)  # whiten [1.5, 1, 2]: mean 1.5, std .5
    with pytest.raises(ValueError, match=">= 2 samples per prompt"):
        adv.grpo(rewards, m, 1)


def test_policy_loss_clipping():
    old = torch.zeros(1, 3)
    logp = T([[math.log(1.5), math.log(0.5), math.log(0.5)]])
    advantages = T([[1.0, 1.0, -1.0]])
    loss, stats = policy_loss(logp, old, advantages, torch.ones(1, 3), clip_eps=0.2)
    close(loss, (-1.2 - 0.5 + 0.8) / 3)   # per token max(-A r, -A clip(r))
    close(stats["policy/clip_fraction"], 2 / 3)
    # global token normalization: the same shard counted in a batch of 6 tokens
    loss6, _ = policy_loss(logp, old, advantages, torch.ones(1, 3), clip_eps=0.2, num_tokens=6)
    close(loss6, -0.15)


def test_value_loss_clipping():
    loss, stats = value_loss(T([[1.0, 0.4]]), T([[0.5, 0.5]]), T([[2.0, 0.0]]), torch.ones(1, 2), clip_eps=0.2)
    close(loss, 0.5 * (1.69 + 0.16) / 2)   # token 1: V_clip = .7 -> (.7 - 2)^2 = 1.69 > 1
    close(stats["value/clip_fraction"], 0.5)
    loss, _ = value_loss(T([[1.0, 0.4]]), T([[0.5, 0.5]]), T([[2.0, 0.0]]), torch.ones(1, 2), clip_eps=None)
    close(loss, 0.5 * (1.0 + 0.16) / 2)


def test_entropy_kl_lm_losses():
    close(entropy_loss(T([[1.0, 3.0, 7.0]]), T([[1.0, 1.0, 0.0]])), 2.0)
    lp, ref = T([[math.log(0.5)]]), T([[math.log(0.25)]])
    close(kl_loss(lp, ref, torch.ones(1, 1), "k3"), 0.193147)
    close(lm_loss(torch.zeros(1, 2, 4), T([[1, 3]]), torch.ones(1, 2)), math.log(4))


def test_kwise_ranking_loss():
    assert ranking_pairs([1, 2, 3]) == [(0, 1), (0, 2), (1, 2)]
    assert ranking_pairs([2, 1, 1]) == [(1, 0), (2, 0)]   # the tie (1, 2) is dropped
    loss, acc = kwise_ranking_loss(T([2.0, 1.0, 0.0]), ranking_pairs([1, 2, 3]))
    # -(2 log sigmoid(1) + log sigmoid(2)) / 3
    close(loss, (2 * 0.313262 + 0.126928) / 3)
    close(acc, 1.0)
    loss, acc = kwise_ranking_loss(T([0.0, 1.0]), [(0, 1)], margin=0.5)
    close(loss, -math.log(1 / (1 + math.exp(1.5))))
    close(acc, 0.0)


def test_ranking_batch_loss_and_last_token_values():
    from rlhf.algo.losses import ranking_batch_loss
    from rlhf.algo.rewards import last_token_values

    # prompt 0: K = 3 ranked [1, 2, 3] with rewards [2, 1, 0]; prompt 1: K = 2 (third slot empty), wrong order
    rewards = T([[2.0, 1.0, 0.0], [0.0, 1.0, 5.0]])
    ranks = torch.tensor([[1, 2, 3], [1, 2, 0]])
    loss, stats = ranking_batch_loss(rewards, ranks)
    prompt0 = (2 * 0.313262 + 0.126928) / 3
    prompt1 = 1.313262                                   # -log sigmoid(0 - 1)
    close(loss, (prompt0 + prompt1) / 2)
    close(stats["rm/accuracy"], 0.5)                     # (1 + 0) / 2 prompts
    assert (stats["rm/correct_pairs"], stats["rm/pairs"]) == (3.0, 4)
    values = T([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    close(last_token_values(values, torch.tensor([[1, 1, 0], [0, 1, 1]])), [2.0, 6.0])


def test_bias_normalization():
    from rlhf.algo.rewards import bias_normalization

    assert bias_normalization(T([1.0, 3.0]), "none") == (0.0, 1.0)
    assert bias_normalization(T([1.0, 3.0]), "shift") == (2.0, 1.0)
    shift, scale = bias_normalization(T([1.0, 3.0]), "shift_scale")
    close([shift, scale], [2.0, math.sqrt(2.0)])   # unbiased std of [1, 3]


def test_lr_schedules_warm_up_then_hold_or_decay_to_the_floor():
    from rlhf.optim import lr_schedule

    # warmup 2 of 6 steps: 1/2, 2/2; then progress (s - 2) / 4 from 0 to 1 over steps 2..6; floor 0.1
    assert [lr_schedule(2)(s) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    # linear: 0.1 + 0.9 * (1 - p), p = 0, .25, .5, .75, 1, then held at 1
    linear = lr_schedule(2, "linear", 6, 0.1)
    assert [round(linear(s), 6) for s in range(8)] == [0.5, 1.0, 1.0, 0.775, 0.55, 0.325, 0.1, 0.1]
    # cosine: 0.1 + 0.9 * (1 + cos(pi p)) / 2: p = .25 -> 0.1 + 0.45 * 1.707107 = 0.868198; p = .5 -> 0.55
    cosine = lr_schedule(2, "cosine", 6, 0.1)
    assert [round(cosine(s), 6) for s in range(8)] == [0.5, 1.0, 1.0, 0.868198, 0.55, 0.231802, 0.1, 0.1]
    assert lr_schedule(0, "cosine", 4, 0.0)(2) == pytest.approx(0.5)      # no warmup: halfway down to 0 at step 2
    with pytest.raises(ValueError, match="lr schedule 'cosine' decays over the run's optimizer steps"):
        lr_schedule(2, "cosine")
    with pytest.raises(ValueError, match="lr schedule 'step': not one of constant, cosine, linear"):
        lr_schedule(2, "step", 6)
