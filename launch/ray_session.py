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


def attach_options(address: str) -> dict:
    """ray.init options to attach at `address`. A head on loopback (cluster/local.sh) has its raylet on 127.0.0.1;
    without saying so the driver looks for one on this machine's interface address and retries for minutes."""
    from ray._private.services import canonicalize_bootstrap_address

    options = {"address": address, "log_to_driver": True}
    if address.startswith("ray://"):
        return options
    resolved = canonicalize_bootstrap_address(address) or ""
    if resolved.rsplit(":", 1)[0] in ("127.0.0.1", "localhost"):
        options["_node_ip_address"] = "127.0.0.1"
    return options


def use_cluster_token() -> None:
    """A head started with token authentication (Ray's default) answers only clients that hold its token. Ray's
    own CLI turns token mode on when a token is available (~/.ray/auth_token, RAY_AUTH_TOKEN[_PATH]) and RAY_AUTH_MODE
    is unset; so does `rlhf` before it attaches to a cluster or its job API."""
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


@contextlib.contextmanager
def ray_session(cfg):
    if ray.is_initialized():          # a caller (a test, a notebook, the pipeline) owns the cluster
        yield
        return
    address = cfg.cluster_address
    if address:
        use_cluster_token()
        ray.init(**attach_options(address))
    else:
        # a local cluster gets as many logical CPUs as the roles ask for (they share the real cores); its ports
        # listen on loopback only
        cpus, gpus = resources_needed(cfg)
        import torch

        env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
        if not torch.cuda.is_available():
            env["DS_ACCELERATOR"] = "cpu"     # say it, so DeepSpeed does not warn in every actor
        # address="local": a cluster of the run's own, even when `ray start` left one running on this machine
        ray.init(address="local", num_cpus=max(int(cpus + 0.999), os.cpu_count() or 1),
                 num_gpus=torch.cuda.device_count() if gpus else 0, include_dashboard=False,
                 _node_ip_address="127.0.0.1", runtime_env={"env_vars": env})
    try:
        yield
    finally:
        ray.shutdown()
