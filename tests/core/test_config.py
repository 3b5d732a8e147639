"""Config: YAML + dotted overrides, and one-line errors naming the key for every kind of mistake."""
import pytest

from rlhf.config import Config, ConfigError, bundled_default, load_config, parse_overrides


def error_of(*overrides, path=None, stage="ppo"):
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides), stage=stage)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["--ppo.kl_coef", "0.05", "--run.name=x", "--reward.clip", "null"]) == {
        "ppo": {"kl_coef": 0.05}, "run": {"name": "x"}, "reward": {"clip": None}}
    cfg = load_config(None, ["--ppo.kl_coef", "0.05", "--actors.policy.num_actors", "2",
                             "--deepspeed.policy.micro_batch_size", "4"])
    assert cfg.ppo.kl_coef == 0.05 and cfg.actors.policy.num_actors == 2


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ppo:\n  kl_coef: 0.1\n  gamma: 0.9\n")
    cfg = load_config(str(path), ["--ppo.kl_coef", "0.2"])
    assert (cfg.ppo.kl_coef, cfg.ppo.gamma) == (0.2, 0.9)


def test_errors_name_the_key(tmp_path):
    assert "ppo.kl_cof: unknown key" in error_of("--ppo.kl_cof", "1")
    assert "ppo.kl_coef" in error_of("--ppo.kl_coef", "abc") and "'abc'" in error_of("--ppo.kl_coef", "abc")
    assert "deepspeed.policy.zero_stage" in error_of("--deepspeed.policy.zero_stage", "5")
    assert "ppo.num_minibatches" in error_of("--ppo.num_minibatches", "3")
    assert "deepspeed.policy.micro_batch_size" in error_of("--actors.policy.num_actors", "3")
    assert "rollout.n_samples_per_prompt" in error_of("--ppo.advantage_estimator", "grpo",
                                                      "--rollout.n_samples_per_prompt", "1")
    assert "reward.function" in error_of("--reward.model", "some/model")
    assert "ppo.ptx_coef" in error_of("--ppo.ptx_coef", "0.1")
    assert "actors.reference.colocate_with" in error_of("--actors.reference.colocate_with", "nobody")
    assert "offload_params" in error_of("--deepspeed.policy.offload_params", "true")
    assert "missing value" in error_of("--ppo.kl_coef")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo: [1, 2\n")
    assert "bad.yaml" in error_of(path=str(bad)) and "invalid YAML" in error_of(path=str(bad))
    assert "no such file" in error_of(path=str(tmp_path / "missing.yaml"))


def test_every_field_has_a_docstring_and_bundled_default_validates():
    def walk(model):
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                yield from walk(annotation)
            else:
                yield name, field.description
    missing = [name for name, doc in walk(Config) if not doc]
    assert not missing, missing
    Config.model_validate(bundled_default())


def test_gpu_placements_that_would_share_a_device_within_one_nccl_group_are_refused():
    two = ["--actors.policy.num_actors", "2", "--deepspeed.policy.micro_batch_size", "4"]
    # half a GPU per policy rank: two ranks of the policy's group could land on one device
    assert "actors.policy.num_gpus: policy take 0.5 GPU per bundle over 2 bundles" in error_of(
        *two, "--actors.policy.num_gpus", "0.5")
    # ...but policy and reference colocated at half a GPU each fill a whole one per bundle: fine
    load_config(None, [*two, "--actors.policy.num_gpus", "0.5", "--actors.reference.num_gpus", "0.5",
                       "--actors.reference.num_actors", "2", "--actors.reference.colocate_with", "policy",
                       "--rollout.weight_sync", "object_store"], stage="ppo")
    # two plain reference replicas on one GPU are not a group: fine; under frozen ZeRO-3 they are
    replicas = ["--actors.reference.num_actors", "2", "--actors.reference.num_gpus", "0.5"]
    load_config(None, replicas, stage="ppo")
    assert "actors.reference.num_gpus" in error_of(*replicas, "--deepspeed.frozen_zero_stage", "3")
    # a fraction of a GPU for the policy or the rollout actors under the collective sync: rank 0 and a rollout
    # actor could share one (colocated or packed by Ray); whole GPUs, or the object store, are fine
    shared = ["--actors.policy.num_gpus", "0.5", "--actors.rollout.num_gpus", "0.5",
              "--actors.rollout.colocate_with", "policy"]
    assert "actors.policy.num_gpus: 0.5 GPU: with the collective weight sync" in error_of(*shared)
    assert "actors.rollout.num_gpus: 0.2 GPU" in error_of("--actors.rollout.num_gpus", "0.2")
    load_config(None, [*shared, "--rollout.weight_sync", "object_store"], stage="ppo")
    load_config(None, ["--actors.policy.num_gpus", "1", "--actors.rollout.num_gpus", "1"], stage="ppo")


def test_requests_no_cluster_could_ever_hold_are_named_by_hand():
    from rlhf.config import RoleResources
    from rlhf.placement_rules import bundle_demand, capacity_problem

    resources = {"policy": RoleResources(num_actors=2, num_cpus=2, num_gpus=1),
                 "reference": RoleResources(num_actors=2, num_cpus=1, num_gpus=0.5, colocate_with="policy"),
                 "rollout": RoleResources(num_actors=1, num_cpus=4)}
    demand = bundle_demand(resources)
    assert demand == [("policy+reference", {"CPU": 3, "GPU": 1.5}, 2), ("rollout", {"CPU": 4}, 1)]
    two_gpu_nodes = [{"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 2}]
    assert capacity_problem(demand, {"CPU": 16, "GPU": 4}, two_gpu_nodes) is None
    # 1.5 GPU per bundle on nodes of one GPU each: never, however many nodes
    assert capacity_problem(demand, {"CPU": 32, "GPU": 4}, [{"CPU": 8, "GPU": 1}] * 4).startswith(
        "roles policy+reference need bundles of 3 CPU, 1.5 GPU each, more than any node has (the largest: 8 CPU, 1 GPU)")
    # every bundle fits a node, but 2 x 3 + 4 = 10 CPUs and 3 GPUs are more than the cluster's 9 CPUs and 2 GPUs
    assert capacity_problem(demand, {"CPU": 9, "GPU": 2}, [{"CPU": 9, "GPU": 2}]) == (
        "the run asks for 10 CPU, 3 GPU in all (policy+reference 2 x (3 CPU, 1.5 GPU); rollout 1 x (4 CPU)) "
        "but the cluster has 9 CPU, 2 GPU in all; lower actors.*.num_actors or their num_cpus / num_gpus, or add nodes")
