"""Shared fixtures: one local Ray cluster (loopback only) for the whole session, and small run configs."""
import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(num_cpus=12, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("model_cache"))


def small_config(tmp_path, model_cache, name="run", **sections):
    """A tiny, fast PPO config: 8 prompts x 2 samples, 2 minibatches, 3 steps; `sections` override per key path."""
    from rlhf.config import bundled_default, build_config

    tree = bundled_default()
    tree["run"].update(name=name, output_dir=str(tmp_path), num_steps=3)
    tree["model"]["cache_dir"] = model_cache
    tree["rollout"] = {"prompts_per_step": 8, "n_samples_per_prompt": 2, "max_new_tokens": 8}
    tree["ppo"].update(num_minibatches=2)
    tree["deepspeed"] = {"policy": {"micro_batch_size": 4}, "value": {"micro_batch_size": 4}}
    tree["logging"] = {"wandb_mode": "disabled", "progress_bar": False}
    for dotted, value in sections.items():
        node = tree
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return build_config(tree, "test")
