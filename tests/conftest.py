"""Shared fixtures: one local Ray cluster (loopback only) for the whole session, one model cache, and small run
configs. Everything a test writes (models, datasets caches, runs) goes under a temporary folder, never the user's
cache: RLHF_TEST_CACHE, HF_HOME and the model cache point there for this process, its subprocesses and Ray workers.
Tests that start Ray (directly or through a driver) are marked `ray` automatically. The folder is removed when the
session ends (a subprocess that imports this module uses its parent's)."""
import os
import shutil
import tempfile
import time

import pytest

_OWN_CACHE = "RLHF_TEST_CACHE" not in os.environ
_CACHE = tempfile.mkdtemp(prefix="rlhf-test-cache-") if _OWN_CACHE else os.environ["RLHF_TEST_CACHE"]
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["RLHF_TEST_CACHE"] = _CACHE
os.environ["HF_HOME"] = os.path.join(_CACHE, "huggingface")          # datasets' cache of loaded json files
os.environ["HF_DATASETS_CACHE"] = os.path.join(_CACHE, "huggingface", "datasets")


def pytest_sessionfinish(session):
    if _OWN_CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(items):
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=12, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "HF_HOME": os.environ["HF_HOME"]}})
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def model_cache():
    path = os.path.join(_CACHE, "models")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def layout_run(tmp_path_factory, model_cache, ray_cluster):
    """`layout_run(actors, stage, offload, savers)` -> metrics of a 4-step PPO run of `layout_config` on that layout
    (with the memory savers that change no number on when `savers`: gradient checkpointing, chunked log-probs, a
    frozen forward batch that does not divide the shard), run once per session: the equivalence tests compare
    layouts, and the resume test reuses the 2-actor ZeRO-2 run as its uninterrupted reference."""
    from launch.ppo import run_ppo
    from launch.runlog import read_metrics

    done = {}

    def run(actors: int, stage: int, offload: bool = False, savers: bool = False) -> list[dict]:
        key = (actors, stage, offload, savers)
        if key not in done:
            folder = tmp_path_factory.mktemp("layout")
            extra = dict(model__gradient_checkpointing=True, model__logprobs_chunk=5,
                         deepspeed__frozen_micro_batch_size=3) if savers else {}
            cfg = layout_config(folder, model_cache, "layout", actors, stage, offload, **extra)
            done[key] = read_metrics(run_ppo(cfg))
        return done[key]

    return run


def layout_config(tmp_path, model_cache, name, actors: int, stage: int, offload: bool = False, **sections):
    """`small_config` for 4 steps with the stateful driver parts on (running reward normalization, adaptive KL),
    `actors` policy and value actors under ZeRO `stage` (optimizer offload, and parameter offload at stage 3)."""
    layout = dict(actors__policy__num_actors=actors, actors__value__num_actors=actors,
                  deepspeed__policy__zero_stage=stage, deepspeed__value__zero_stage=stage,
                  run__num_steps=4, checkpoint__export_hf=False, checkpoint__save_at_end=False,
                  reward__normalization="running", ppo__adaptive_kl=True, ppo__kl_target=0.5, ppo__kl_horizon=100)
    if offload:
        layout.update(deepspeed__policy__offload_optimizer=True, deepspeed__value__offload_optimizer=True)
        if stage == 3:
            layout.update(deepspeed__policy__offload_params=True)
    return small_config(tmp_path, model_cache, name, **{**layout, **sections})


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


def wait_for_logged_step(metrics_path, step: int, timeout_s: float = 300.0) -> None:
    """Block until the run's metrics.jsonl has `step` rows (for a test thread that acts mid-run)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metrics_path.exists() and len(metrics_path.read_text().splitlines()) >= step:
            return
        time.sleep(0.05)
