"""One mechanism per job: seeds by named purpose, sharding that never drops rows, the minibatch plan, the
advantage entry point looked up in its table (hand-computed numbers), and settings owned by each stage."""
import pytest
import torch

from rlhf.algo import advantages as adv
from rlhf.algo.ppo import compute_advantages, minibatch_plan
from rlhf.config import (Config, ConfigError, PPOConfig, RewardConfig, RolloutConfig, build_config, engine_settings,
                         for_stage, load_config)
from rlhf.experience import Experience
from rlhf.generation import ENGINES
from rlhf.seeding import PURPOSES, derive_seed
from rlhf.sharding import (balanced_bounds, by_length, concat, covering, local_plan, map_rows, micro_batches, pad_rows,
                           piece_bounds, sample_layout, shard, shard_bounds, shard_slice)


def test_seed_is_a_pure_function_of_seed_purpose_step_and_rank():
    # pinned values: a change here would silently change every run's random streams
    assert derive_seed(0, "sampling", 1, 0) == 6756850754015013485
    assert derive_seed(0, "sampling", 1, 1) == 658807300017394520
    seeds = {derive_seed(s, p, step, rank) for s in (0, 1) for p in PURPOSES for step in (0, 1) for rank in (0, 1)}
    assert len(seeds) == 2 * len(PURPOSES) * 4                  # no two streams share a seed
    assert all(0 <= seed < 2**63 for seed in seeds)
    with pytest.raises(ValueError, match="unknown seed purpose 'sampleing'"):
        derive_seed(0, "sampleing")


def test_sharding_is_contiguous_and_never_drops_rows():
    assert [shard_slice(6, r, 3) for r in range(3)] == [slice(0, 2), slice(2, 4), slice(4, 6)]
    with pytest.raises(ValueError, match="7 rows do not split evenly over 2 ranks"):
        shard_slice(7, 0, 2)
    rows = torch.arange(5)
    padded, real = pad_rows(rows, 2)
    assert padded.tolist() == [0, 1, 2, 3, 4, 4] and real == 5
    per_rank = [shard(padded, r, 2) * 10 for r in range(2)]     # each rank's per-row result
    assert torch.cat(per_rank)[:real].tolist() == [0, 10, 20, 30, 40]
    assert pad_rows(rows, 5)[0] is rows


def test_minibatch_plan_uses_every_row_once_per_epoch_and_depends_only_on_the_seed():
    plan = minibatch_plan(6, 2, 2, seed=123)
    assert [len(m) for m in plan] == [3, 3, 3, 3]
    for epoch in (plan[:2], plan[2:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(6))
    assert all(torch.equal(a, b) for a, b in zip(plan, minibatch_plan(6, 2, 2, seed=123)))
    assert not all(torch.equal(a, b) for a, b in zip(plan, minibatch_plan(6, 2, 2, seed=124)))
    with pytest.raises(ValueError, match="6 rows do not split into 4 equal minibatches"):
        minibatch_plan(6, 4, 1, seed=0)


def test_minibatch_plan_gives_every_rank_block_an_equal_share_of_every_minibatch():
    # 24 rows, 3 minibatches of 8: valid layouts have 1, 2, 4 or 8 ranks (minibatch = ranks x micro x accumulation)
    plan = minibatch_plan(24, 3, 2, seed=7)
    for rows in plan:
        # one row of each run of 3 consecutive rows
        assert sorted((rows // 3).tolist()) == list(range(8))
    for world in (1, 2, 4, 8):
        for rank in range(world):
            block = shard_slice(24, rank, world)
            mine = local_plan(plan, block.start, block.stop)
            assert [len(m) for m in mine] == [8 // world] * 6
            assert all(((m >= 0) & (m < 24 // world)).all() for m in mine)
    # the ranks' parts of a minibatch put back together are the minibatch
    parts = [local_plan(plan, r * 6, (r + 1) * 6)[0] + r * 6 for r in range(4)]
    assert sorted(torch.cat(parts).tolist()) == sorted(plan[0].tolist())


def test_pieces_cut_so_every_consumer_reads_exactly_its_block():
    assert shard_bounds(12, 3) == [0, 4, 8, 12]
    cuts = piece_bounds(shard_bounds(12, 2), shard_bounds(12, 3), [0, 5, 12])
    assert cuts == [0, 4, 5, 6, 8, 12]
    pieces = [(a, b, f"{a}-{b}") for a, b in zip(cuts, cuts[1:])]
    assert covering(pieces, 4, 8) == ["4-5", "5-6", "6-8"]
    assert covering(pieces, 0, 12)[0] == "0-4"
    with pytest.raises(ValueError, match="rows 3-8 are not a union of pieces"):
        covering(pieces, 3, 8)
    # prompts split by token counts, contiguous; equal weights split equally
    assert balanced_bounds([1] * 8, 4) == [0, 2, 4, 6, 8]
    assert balanced_bounds([5, 1, 1, 1, 1, 1], 2) == [0, 1, 6]
    assert balanced_bounds([3, 1, 1, 1], 3) == [0, 1, 2, 4]
    assert balanced_bounds([1, 1], 4) == [0, 1, 2, 2, 2]
    assert concat([torch.tensor([1]), torch.tensor([2, 3])]).tolist() == [1, 2, 3]
    # 3 prompts x 2 samples, the first prompt twice the work: 2 rollout actors sample prompts [0] and [1, 2]
    # (rows 0-2 and 2-6); readers with 2 and 3 ranks read rows 0-3 / 3-6 and 0-2 / 2-4 / 4-6
    rows, cuts = sample_layout([40, 20, 20], 2, 2, [2, 3, 1])
    assert rows == [0, 2, 6] and cuts == [0, 2, 3, 4, 6]


def two_samples(values=None) -> Experience:
    """One prompt, two samples of two tokens: scores 1 and 0; sample 0's first token has KL 0.5 (k1)."""
    return Experience(sequences=torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 3, dtype=torch.long),
                      response_mask=torch.ones(2, 2), ends_with_eos=torch.ones(2, dtype=torch.bool),
                      prompt_index=torch.zeros(2, dtype=torch.long), prompt_length=1,
                      old_logprobs=torch.tensor([[-1.0, -1.0], [-1.0, -1.0]]),
                      reference_logprobs=torch.tensor([[-1.5, -1.0], [-1.0, -1.0]]),
                      scores=torch.tensor([1.0, 0.0]), values=values)


def test_advantage_entry_point_by_hand():
    # token rewards: -0.1 * KL_t, plus the score on the last token -> [[-0.05, 1.0], [0, 0]]
    gae = PPOConfig(advantage_estimator="gae", kl_coef=0.1, gamma=1.0, lam=1.0, whiten_advantages=False)
    exp, stats = compute_advantages(two_samples(torch.tensor([[0.5, 0.5], [0.0, 0.0]])), gae, RewardConfig(),
                                    0.1, 2, None)
    assert torch.allclose(exp.rewards, torch.tensor([[-0.05, 1.0], [0.0, 0.0]]))
    # delta_1 = 1 - 0.5 = 0.5; delta_0 = -0.05 + 0.5 - 0.5 = -0.05; A_0 = -0.05 + 0.5 = 0.45; returns = A + V
    assert torch.allclose(exp.advantages, torch.tensor([[0.45, 0.5], [0.0, 0.0]]))
    assert torch.allclose(exp.returns, torch.tensor([[0.95, 1.0], [0.0, 0.0]]))
    assert stats["kl/sequence_mean"] == pytest.approx(0.25) and stats["reward/score_mean"] == pytest.approx(0.5)
    # GRPO: R = [0.95, 0]; (R - mean) / std with the unbiased std 0.475 * sqrt(2) -> +-1/sqrt(2) on every token
    grpo = PPOConfig(advantage_estimator="grpo", kl_coef=0.1)
    exp, _ = compute_advantages(two_samples(), grpo, RewardConfig(), 0.1, 2, None)
    assert torch.allclose(exp.advantages, torch.tensor([[0.70710, 0.70710], [-0.70710, -0.70710]]), atol=1e-4)
    assert torch.allclose(exp.returns, torch.tensor([[0.95, 0.95], [0.0, 0.0]]))


def test_choices_come_from_the_tables():
    def choices(section, field):
        return set(section.model_fields[field].annotation.__args__)

    assert choices(PPOConfig, "advantage_estimator") == set(adv.ESTIMATORS)
    assert choices(RolloutConfig, "engine") == set(ENGINES)
    critic = {name for name, estimator in adv.ESTIMATORS.items() if estimator.uses_critic}
    for name in adv.ESTIMATORS:
        cfg = build_config({"ppo": {"advantage_estimator": name}})
        assert cfg.uses_critic == (name in critic) and ("value" in cfg.active_roles()) == (name in critic)
    with pytest.raises(ConfigError, match="ppo.advantage_estimator"):
        build_config({"ppo": {"advantage_estimator": "ppo2"}})


def test_each_stage_owns_its_settings_checks_and_run_name():
    # a PPO-only impossibility does not stop SFT or RM
    tree = {"ppo": {"num_minibatches": 3}, "sft": {"lr": 0.003, "weight_decay": 0.1, "max_grad_norm": 0.5,
                                                   "warmup_steps": 2, "micro_batch_size": 4,
                                                   "deepspeed": {"zero_stage": 2, "offload_optimizer": True}},
            "deepspeed": {"policy": {"micro_batch_size": 16, "zero_stage": 3}}}
    cfg = build_config(tree)
    for stage in ("sft", "rm"):
        assert for_stage(cfg, stage).run.name == f"{stage}-default"
    with pytest.raises(ConfigError, match="config error for rlhf ppo: ppo.num_minibatches"):
        for_stage(cfg, "ppo")
    sft = engine_settings(cfg, "sft")
    assert (sft.lr, sft.weight_decay, sft.max_grad_norm, sft.warmup_steps, sft.micro_batch_size, sft.minibatch_size) \
        == (0.003, 0.1, 0.5, 2, 4, 32)
    assert sft.zero.zero_stage == 2 and sft.zero.offload_optimizer
    policy = engine_settings(build_config({}), "policy")
    assert (policy.micro_batch_size, policy.minibatch_size, policy.zero.zero_stage) == (8, 32, 0)
    # a decayed schedule spans PPO's optimizer steps (steps x epochs x minibatches) or the supervised stage's own
    decayed = build_config({"run": {"num_steps": 10}, "ppo": {"lr_schedule": "linear", "ppo_epochs": 2,
                                                              "num_minibatches": 4, "min_lr_ratio": 0.0},
                            "sft": {"lr_schedule": "cosine", "warmup_steps": 0}})
    policy = engine_settings(decayed, "policy")
    assert policy.total_steps == 80 and policy.lr_multiplier()(40) == 0.5 and policy.lr_multiplier()(80) == 0.0
    assert engine_settings(decayed, "sft", total_steps=30).lr_multiplier()(30) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="sft.lr_schedule"):
        build_config({"sft": {"lr_schedule": "step"}})
    assert for_stage(Config(), "ppo").run.name == "ppo-default"
    assert for_stage(Config(), "pipeline").run.name == "pipeline-default"
    assert for_stage(build_config({"run": {"name": "mine"}}), "sft").run.name == "mine"
    # the stage's own batch checks, with the stage's actors
    with pytest.raises(ConfigError, match="rm.micro_batch_size: batch_size 16 is not divisible by 3 reward actors"):
        load_config(None, ["--actors.reward.num_actors", "3"], stage="rm")
    load_config(None, ["--actors.reward.num_actors", "3"], stage="sft")
    with pytest.raises(ConfigError, match="sft.deepspeed.offload_params: parameter offload needs zero_stage 3"):
        build_config({"sft": {"deepspeed": {"offload_params": True}}})
    with pytest.raises(ConfigError, match="deepspeed.reward: moved to rm.deepspeed"):
        build_config({"deepspeed": {"reward": {"zero_stage": 2}}})


def test_micro_batches_group_rows_of_similar_length_and_outputs_come_back_in_row_order():
    # response lengths 3, 1, 2, 1 (prompt lengths 1, 2, 1, 1): sorted by response, then prompt length
    pairs = [([5], [1, 2, 3]), ([5, 6], [1]), ([5], [1, 2]), ([5], [4])]
    exp = Experience.from_pairs(pairs, pad_id=0)
    assert [rows.tolist() for rows in by_length(exp, 2)] == [[3, 1], [2, 0]]
    assert [len(m) for m in micro_batches(exp, 3)] == [3, 1]
    # each micro-batch's per-row output is its rows' response lengths: put back, row i gets its own
    out = map_rows(exp, 2, lambda micro: micro.response_mask.sum(dim=1))
    assert out.tolist() == [3.0, 1.0, 2.0, 1.0]
    # batches without lengths keep their order
    assert [rows.tolist() for rows in by_length(torch.arange(5), 2)] == [[0, 1], [2, 3], [4]]
