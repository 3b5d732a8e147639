"""Run by tests/e2e/test_multinode.py in a process of its own (a process attaches to one Ray cluster): a Ray
cluster of three nodes on this machine (`ray.cluster_utils.Cluster`, four CPUs each), and a PPO run on it with the
trainable roles spread over the nodes. Prints the run directory."""
import sys

import ray
from ray.cluster_utils import Cluster

from launch.ppo import run_ppo
from tests.conftest import layout_config


def main(output_dir: str, model_cache: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=4)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        spread = {"strategy": "spread", "num_actors": 2}
        cfg = layout_config(output_dir, model_cache, "multinode", 2, 0, run__num_steps=2,
                            actors__policy=spread, actors__value=spread)
        print(f"RUN_DIR={run_ppo(cfg)}", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
