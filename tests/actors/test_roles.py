"""Role actors on a real local Ray cluster: groups, placement and colocation, ZeRO-3 frozen engines, weight sync
from a ZeRO-3 policy to rollout actors, and a scalar-head reward model."""
import time

import pytest
import ray
import torch

from actors.group import Calls, ResultsLost, RoleError, RoleGroups, RoleSpec, gather
from actors.placement import PlacementError, create_placement_groups, remove_groups
from actors.policy import PolicyWorker
from actors.reference import ReferenceWorker
from actors.reward import RewardWorker
from actors.rollout import RolloutWorker
from actors.weight_sync import CollectiveSync, ObjectStoreSync, sync_policy_to_rollout
from rlhf.config import RoleResources
from rlhf.data.prompts import left_pad
from rlhf.generation import HFGenerateEngine, SamplingParams
from rlhf.models import (load_causal_lm, load_scalar_model, load_tokenizer, make_tiny_model,
                         save_reward_normalization)
from rlhf.seeding import derive_seed
from tests.actors.echo_worker import EchoWorker
from tests.conftest import small_config


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return str(make_tiny_model(root / "a", seed=1)), str(make_tiny_model(root / "b", seed=2))


def start(cfg, role, worker_cls, actors, distributed, *setup_args) -> RoleGroups:
    """One role's group through the same path every stage uses (placed, started, connected, set up)."""
    resources = RoleResources(num_actors=actors, num_cpus=1)
    return RoleGroups(cfg, [RoleSpec(role, worker_cls, setup_args, distributed, resources)])


def prompts(tokenizer, count=4):
    rows = tokenizer([f"repeat {i}:" for i in range(count)], add_special_tokens=False)["input_ids"]
    return left_pad(rows, tokenizer.pad_token_id)


def experience(tokenizer, path, n=2):
    ids, mask = prompts(tokenizer)
    engine = HFGenerateEngine(load_causal_lm(path), tokenizer, torch.device("cpu"))
    return engine.generate(ids, mask, torch.arange(4), SamplingParams(max_new_tokens=5, n_samples_per_prompt=n), 3)


def test_group_calls_in_rank_order_restarts_and_rejects_impossible_placement(ray_cluster, tmp_path, model_cache):
    cfg = small_config(tmp_path, model_cache, run__phase_timeout_s=900)
    with start(cfg, "rollout", EchoWorker, 2, False) as groups:
        workers = groups["rollout"]
        assert [r for r in ray.get([a.__ray_call__.remote(lambda self: self.rank) for a in workers.actors])] == [0, 1]
        # every wait has the phase deadline (`run.phase_timeout_s`, shortened here once the actors are up): stuck
        # workers fail the call, naming who did not answer
        assert workers.timeout_s == 900
        workers.timeout_s = 2
        began = time.monotonic()
        with pytest.raises(RoleError, match=r"no answer within 2 s from rollout actor 0 \(stall\), rollout actor 1"):
            workers.run("stall", 600)
        assert time.monotonic() - began < 10
        workers.timeout_s = 900
        workers.restart()
        assert workers.run("ready") == [True, True]
        # the driver splits: each worker receives its own block only, whole or in pieces, in order
        assert workers.run_shards("received", torch.arange(6)) == [[0, 1, 2], [3, 4, 5]]
        pieces = [[ray.put(torch.arange(0, 2)), ray.put(torch.arange(2, 3))], [ray.put(torch.arange(3, 6))]]
        assert gather(workers.call_shards("received", pieces)) == [[0, 1, 2], [3, 4, 5]]
        # a piece gone from the object store (here its owner died) is told apart from the worker's own errors
        [orphan] = ray.get(workers.actors[1].own.remote(300_000))
        ray.kill(workers.actors[1])
        assert groups.dead_roles(settle_s=30) == {"rollout": [1]}      # gone before anyone reads what it owned
        deadline = time.monotonic() + 60           # the owner's death reaches the object store within seconds
        while True:
            try:
                gather(Calls("rollout", "received", [workers.actors[0].received.remote([orphan])]))
            except ResultsLost as error:
                assert "rollout actor 0 (received): a piece of the batch was lost" in str(error)
                break
            assert time.monotonic() < deadline, "the orphaned piece is still readable"
            time.sleep(0.5)
    # more than the cluster has in all fails at once, whatever the timeout; what fits but is taken waits it out
    with pytest.raises(PlacementError, match=r"the run asks for 24 CPU in all \(policy 3 x \(8 CPU\)\) but the "
                                             r"cluster has 12 CPU"):
        create_placement_groups({"policy": RoleResources(num_actors=3, num_cpus=8)}, timeout_s=600)
    held = create_placement_groups({"reward": RoleResources(num_actors=1, num_cpus=10)})
    try:
        with pytest.raises(PlacementError, match=r"roles policy need 1 bundle\(s\) of \{'CPU': 8.*within 1 s"):
            create_placement_groups({"policy": RoleResources(num_actors=1, num_cpus=8)}, timeout_s=1)
    finally:
        remove_groups(held)


def test_colocated_roles_share_bundles(ray_cluster, tmp_path, model_cache):
    cfg = small_config(tmp_path, model_cache, actors={"policy": {"num_cpus": 1},
                                                      "reference": {"num_cpus": 0.5, "colocate_with": "policy"}})
    groups = create_placement_groups({r: getattr(cfg.actors, r) for r in ("policy", "reference", "reward")})
    try:
        assert groups["policy"] is groups["reference"] and groups["reward"] is not groups["policy"]
        assert groups["policy"].bundle_specs == [{"CPU": 1.5}]
    finally:
        remove_groups(groups)


def test_zero3_reference_matches_plain_replica(ray_cluster, tmp_path, model_cache, models):
    path = models[0]
    tokenizer = load_tokenizer(path)
    exp = experience(tokenizer, path)
    # the plain replica needs no group: the same worker class, in this process
    plain_cfg = small_config(tmp_path, model_cache, deepspeed__frozen_zero_stage=0)
    plain = ReferenceWorker(plain_cfg.model_dump(mode="json"), "reference", 0, 1, 1)
    plain.setup(path)
    replica = plain.logprobs([ray.put(exp)])
    cfg = small_config(tmp_path, model_cache, deepspeed__frozen_zero_stage=3)
    with start(cfg, "reference", ReferenceWorker, 2, True, path) as groups:
        sharded = torch.cat(groups["reference"].run_shards("logprobs", exp))
    assert replica.shape == exp.response_mask.shape
    assert torch.allclose(replica, sharded, atol=1e-5)


def test_weight_sync_from_zero3_policy_both_ways(ray_cluster, tmp_path, model_cache, models):
    policy_path, other_path = models
    cfg = small_config(tmp_path, model_cache, deepspeed__policy__zero_stage=3, actors__policy__num_actors=2,
                       rollout__weight_sync_bucket_mb=1 / 256)
    specs = [RoleSpec("policy", PolicyWorker, (policy_path,), True, RoleResources(num_actors=2)),
             RoleSpec("rollout", RolloutWorker, (other_path, other_path))]    # starts from different weights
    with RoleGroups(cfg, specs) as groups:
        policy, rollout = groups["policy"], groups["rollout"]
        # ZeRO-3 built the model partitioned: each rank holds about half of it, and never held it whole
        counts = policy.run("parameter_counts")
        full = load_causal_lm(policy_path).num_parameters()
        for rank in counts:
            assert rank["built_partitioned"] and rank["full"] == full
            assert full / 2 <= rank["local"] < full / 2 + 1024           # a partition is padded to the ranks
        tokenizer = load_tokenizer(policy_path)
        ids, mask = prompts(tokenizer)
        params = SamplingParams(max_new_tokens=6, n_samples_per_prompt=1)
        before = rollout.run("generate", ids, mask, torch.arange(4), params, "sampling", 5)[0]
        seconds = sync_policy_to_rollout(policy, rollout)
        after = rollout.run("generate", ids, mask, torch.arange(4), params, "sampling", 5)[0]
        local = HFGenerateEngine(load_causal_lm(policy_path), tokenizer, torch.device("cpu"))
        expected = local.generate(ids, mask, torch.arange(4), params, derive_seed(cfg.run.seed, "sampling", 5, 0))
        assert seconds > 0
        assert torch.equal(after.sequences, expected.sequences)
        assert not torch.equal(before.sequences, expected.sequences)

        # a ZeRO-3 update of the policy, then both ways to two rollout groups: bit-identical weights
        exp = experience(tokenizer, policy_path)
        zeros = torch.zeros_like(exp.response_mask)
        exp = exp.replace(old_logprobs=zeros, reference_logprobs=zeros,
                          advantages=torch.randn(zeros.shape, generator=torch.Generator().manual_seed(0)))
        policy.run_shards("train", exp, {}, [torch.arange(len(exp))], 0.0, None)
        trained = {}
        collective_spec = [RoleSpec("rollout", RolloutWorker, (other_path, other_path),
                                    resources=RoleResources(num_actors=2))]
        with RoleGroups(cfg, collective_spec) as second:
            collective = CollectiveSync(policy, second["rollout"], cfg)
            assert len(collective.plan) > 1                      # the 4 KiB buckets split the model
            stats = collective()
            assert stats["time/weight_sync"] > 0 and stats["memory/weight_sync_extra_mb"] >= 0
            # measured at the first sync only (on CPU the measure costs the next phase), unless asked every time
            assert "memory/weight_sync_extra_mb" not in collective()
            collective.measure_every_sync = True
            assert collective()["memory/weight_sync_extra_mb"] >= 0
            trained["collective"] = second["rollout"].run("state_dict")
        assert ObjectStoreSync(policy, rollout)()["time/weight_sync"] > 0
        trained["object_store"] = rollout.run("state_dict")[0]
        initial = load_causal_lm(policy_path).state_dict()
        for name, tensor in trained["object_store"].items():
            for copy in trained["collective"]:
                assert torch.equal(copy[name], tensor), name
        assert any(not torch.equal(initial[name], tensor) for name, tensor in trained["object_store"].items())


def test_scalar_head_reward_model_scores_last_token(ray_cluster, tmp_path, model_cache, models):
    path = models[0]
    reward_dir = tmp_path / "rm"
    rm = load_scalar_model(path)
    rm.save_pretrained(reward_dir)
    load_tokenizer(path).save_pretrained(reward_dir)
    cfg = small_config(tmp_path, model_cache, reward={"function": None, "model": str(reward_dir)})
    with start(cfg, "reward", RewardWorker, 2, False, path) as groups:
        tokenizer = load_tokenizer(path)
        exp = experience(tokenizer, path)
        scores = torch.cat(groups["reward"].run_shards("scores", exp))
        row = 1
        real = exp.attention_mask[row].bool()
        expected = rm(input_ids=exp.sequences[row][real].unsqueeze(0)).logits[0, -1, 0]
        assert scores.shape == (8,) and scores[row].item() == pytest.approx(expected.item(), abs=1e-5)
        # bias normalization saved with the model is applied wherever it scores (read when the model is loaded)
        save_reward_normalization(reward_dir, shift=2.0, scale=4.0, reference="test")
        groups["reward"].run("setup", path)
        normalized = torch.cat(groups["reward"].run_shards("scores", exp))
        assert torch.allclose(normalized, (scores - 2.0) / 4.0, atol=1e-5)


def test_weight_sync_table_and_bucket_plan():
    from actors.weight_sync import METHODS, bucket_plan
    from rlhf.config import RolloutConfig

    assert set(RolloutConfig.model_fields["weight_sync"].annotation.__args__) == set(METHODS)
    named = [("a", (256, 256), "float32"), ("b", (256,), "float32"), ("c", (512, 256), "float32"),
             ("d", (4,), "bfloat16")]
    # 0.25 MiB buckets: a (256 KiB) fills one; b starts the next; c (512 KiB) is larger than a bucket, so alone;
    # d has another dtype
    assert [[name for name, _, _ in bucket] for bucket in bucket_plan(named, 0.25)] == [["a"], ["b"], ["c"], ["d"]]
    assert [[name for name, _, _ in bucket] for bucket in bucket_plan(named, 0.5)] == [["a", "b"], ["c"], ["d"]]
    assert [[name for name, _, _ in bucket] for bucket in bucket_plan(named, 1.0)] == [["a", "b", "c"], ["d"]]


def test_a_collective_that_lost_its_peer_counts_as_a_possible_loss_and_other_errors_do_not():
    from actors.roles import lost_peer

    gloo = RuntimeError("value actor 1 (train): [gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:23956: "
                        "Connection reset by peer. This is typically caused by a remote worker hanging")
    assert lost_peer(gloo)
    assert not lost_peer(ValueError("reward function rlhf.data.toy:f returned 3 scores for 4 responses"))
