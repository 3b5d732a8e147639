"""Connect to an existing Ray cluster or start a local one sized for the config; stop only what we started."""
from __future__ import annotations

import contextlib
import os

import ray


def resources_needed(cfg) -> tuple[float, float]:
    roles = cfg.active_roles()
    cpus = sum(getattr(cfg.actors, r).num_cpus * getattr(cfg.actors, r).num_actors for r in roles)
    gpus = sum(getattr(cfg.actors, r).num_gpus * getattr(cfg.actors, r).num_actors for r in roles)
    return cpus, gpus


@contextlib.contextmanager
def ray_session(cfg):
    if ray.is_initialized():          # a caller (a test, a notebook, the pipeline) owns the cluster
        yield
        return
    if cfg.run.ray_address:
        ray.init(address=cfg.run.ray_address, log_to_driver=True)
    else:
        # a local cluster gets as many logical CPUs as the roles ask for (they share the real cores);
        # loopback only
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        cpus, gpus = resources_needed(cfg)
        import torch

        env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
        if not torch.cuda.is_available():
            env["DS_ACCELERATOR"] = "cpu"     # say it, so DeepSpeed does not warn in every actor
        ray.init(num_cpus=max(int(cpus + 0.999), os.cpu_count() or 1),
                 num_gpus=torch.cuda.device_count() if gpus else 0, include_dashboard=False,
                 runtime_env={"env_vars": env})
    try:
        yield
    finally:
        ray.shutdown()
