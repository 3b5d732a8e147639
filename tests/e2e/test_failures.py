"""Failures that must not leak: a worker that fails during start-up or during a step surfaces with its role and
rank, and every actor and placement group the run created is gone afterwards, although the (test session's) Ray
cluster lives on."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from ray.util import placement_group_table

from launch.ppo import run_ppo
from launch.runlog import read_metrics
from rlhf.checkpoint import CheckpointManager
from rlhf.models import ModelLoadError, resolve_model_path
from rlhf.numerics import NumericalFaultError
from tests.conftest import small_config

pytestmark = pytest.mark.slow


def assert_nothing_left(timeout_s: float = 30.0) -> None:
    """Every CPU of the cluster is free again and no placement group is left alive."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [g for g in placement_group_table().values() if g["state"] not in ("REMOVED",)]
        free = ray.available_resources().get("CPU", 0.0) == ray.cluster_resources().get("CPU")
        if free and not alive:
            return
        assert time.monotonic() < deadline, (ray.available_resources(), alive)
        time.sleep(0.2)


def test_worker_failing_at_start_up_names_role_and_rank_and_leaves_nothing(tmp_path, model_cache, ray_cluster):
    broken = tmp_path / "broken_value"
    broken.mkdir()
    # a config transformers cannot read is caught before any actor starts (the memory plan reads it)...
    (broken / "config.json").write_text('{"model_type": "no_such_architecture"}')
    cfg = small_config(tmp_path, model_cache, "broken", model__value=str(broken))
    with pytest.raises(ModelLoadError, match=r"model.value: cannot read the model config of .*broken_value"):
        run_ppo(cfg)
    # ...a readable config with corrupt weights fails in the value actor, which says so
    tiny = resolve_model_path("tiny", cfg.model.cache_dir, cfg.model.tiny)
    shutil.copy(Path(tiny) / "config.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file" * 8)
    with pytest.raises(Exception, match=r"value actor 0 \(setup\): cannot load scalar-head model .*deserializing"):
        run_ppo(cfg)
    assert not (tmp_path / "broken").exists()
    assert_nothing_left()


def test_worker_failing_mid_run_names_role_and_rank_and_leaves_nothing(tmp_path, model_cache, ray_cluster):
    cfg = small_config(tmp_path, model_cache, "flaky", reward__function="tests.e2e.flaky_rewards:fails_at_second_call",
                       ppo__advantage_estimator="grpo")     # no value actors: nothing here needs them
    with pytest.raises(Exception, match=r"reward actor 0 \(scores\): .*raised ZeroDivisionError: the judge crashed"):
        run_ppo(cfg)
    assert [row["step"] for row in read_metrics(tmp_path / "flaky")] == [1]
    assert_nothing_left()


def test_non_finite_updates_are_skipped_then_stop_the_run_keeping_the_last_good_checkpoint(tmp_path, model_cache,
                                                                                           ray_cluster):
    # from step 3 the rewards are 3e38: the value loss is inf and the whitened advantages NaN, so every update of
    # both roles is skipped (2 per step)
    cfg = small_config(tmp_path, model_cache, "exploding", run__num_steps=5, run__max_bad_steps=3,
                       checkpoint__every=1, checkpoint__keep_last=5,
                       reward__function="tests.e2e.flaky_rewards:explodes_from_third_call")
    with pytest.raises(NumericalFaultError, match=r"^policy: 3 optimizer updates in a row had a non-finite loss or "
                                                  r"gradient norm \(steps 3-4\) and were skipped on every rank; "
                                                  r"stopping at run.max_bad_steps = 3\. The last good checkpoint is "
                                                  r".*exploding/checkpoints/step_000002 \(`rlhf ppo --resume`"):
        run_ppo(cfg)
    rows = read_metrics(tmp_path / "exploding")
    assert [row["step"] for row in rows] == [1, 2, 3]          # step 3: 2 skipped updates, below the limit, logged
    for role in ("policy", "value"):
        assert [row[f"{role}/skipped_updates"] for row in rows] == [0, 0, 2]
        assert f"{role}/loss" in rows[1] and f"{role}/loss" not in rows[2]
    # inside the streak nothing was saved: the checkpoints are those of the good steps, and whole
    assert [p.name for p in CheckpointManager(tmp_path / "exploding", 5).complete()] == ["step_000001", "step_000002"]
    assert_nothing_left()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="hiding the run directory from the cluster needs a mount namespace (root and unshare)")
def test_run_directory_the_trainable_nodes_cannot_see_is_refused_at_start(tmp_path, model_cache, ray_cluster):
    """`rlhf ppo` attaches to the session's cluster from a mount namespace of its own, where its output folder is a
    private tmpfs: the driver writes the run directory, the actors (another 'node's view of the files) do not see
    it, and the run stops at start with one line naming the folder, the node and the rank, leaving nothing."""
    private = tmp_path / "not_shared"
    private.mkdir()
    driver = [sys.executable, "-m", "launch.cli", "ppo", "--run.ray_address", ray.get_runtime_context().gcs_address,
              "--run.output_dir", str(private), "--model.cache_dir", model_cache, "--run.name", "unseen",
              "--logging.progress_bar", "false", "--checkpoint.export_hf", "false"]
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                           'mount -t tmpfs tmpfs "$0" && exec "$@"', str(private), *driver],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"rlhf ppo: error: run.output_dir: {private} is not visible from node "), line
    assert "(policy actor 0)" in line and "shared" in line
    assert not any(private.iterdir())               # the actors' view: nothing was written there
    assert_nothing_left()
