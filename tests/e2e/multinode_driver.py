"""Run by tests/e2e/test_multinode.py in a process of its own (a process attaches to one Ray cluster): a Ray
cluster of three nodes on this machine (`ray.cluster_utils.Cluster`, four CPUs each), and a PPO run on it with the
trainable roles spread over the nodes. Once step 1 is logged, a worker node holding a policy rank is removed from
the cluster (its raylet and every process on it stopped, as when a machine is lost); the run recovers on the nodes
left. Prints the run directory, the id of the node removed and where the ranks were placed before."""
import json
import sys
import threading
from pathlib import Path

import ray
from ray._private.state import actors as actor_table
from ray.cluster_utils import Cluster

from launch.ppo import run_ppo
from tests.conftest import layout_config, wait_for_logged_step


def remove_node_when(cluster: Cluster, metrics: Path, after_step: int, removed: list) -> threading.Thread:
    """A thread that, once `after_step` is logged, removes a worker node that runs a policy rank."""

    def remove():
        wait_for_logged_step(metrics, after_step)
        policy = sorted((a for a in actor_table().values()
                         if a["ActorClassName"] == "PolicyWorker" and a["State"] == "ALIVE"), key=lambda a: a["Pid"])
        nodes = {a["Address"]["NodeID"] for a in policy}
        node = next(n for n in cluster.worker_nodes if n.node_id in nodes)
        removed.append((node.node_id, (metrics.parent / "placement.json").read_text()))
        cluster.remove_node(node, allow_graceful=False)

    thread = threading.Thread(target=remove, daemon=True)
    thread.start()
    return thread


def main(output_dir: str, model_cache: str) -> None:
    # the node's loss is declared after 3 missed health checks of 1 s (Ray's default: 5 of 3 s)
    health = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "_system_config": health})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=4)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        spread = {"strategy": "spread", "num_actors": 2}
        cfg = layout_config(output_dir, model_cache, "multinode", 2, 0, run__num_steps=2, checkpoint__every=2,
                            actors__policy=spread, actors__value=spread)
        removed: list = []
        remover = remove_node_when(cluster, Path(output_dir) / "multinode" / "metrics.jsonl", 1, removed)
        run_dir = run_ppo(cfg)
        remover.join(timeout=5)
        node, placed = removed[0] if removed else ("", "{}")
        print(f"RUN_DIR={run_dir}\nREMOVED={node}\nPLACED={json.dumps(json.loads(placed))}", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
