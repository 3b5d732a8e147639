"""Every way to get a cluster that cluster/ documents is well-formed: the `ray up` YAML passes Ray's own schema,
the KubeRay job's config passes ours, the scripts parse, ports stay off public interfaces, and the READMEs link
each file."""
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from rlhf.config import build_config, for_stage, merge_trees, parse_overrides

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def test_ray_up_yaml_passes_rays_schema_and_keeps_the_dashboard_on_loopback():
    import jsonschema
    import ray

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "--head" in head_start
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert any("pip install" in command and "~/rlhf" in command for command in config["setup_commands"])


def test_kuberay_job_runs_a_valid_rlhf_command_with_shared_runs_and_no_public_service():
    job, config_map = yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"], config_map["kind"]) == ("ray.io/v1", "RayJob", "ConfigMap")
    words = job["spec"]["entrypoint"].split()
    assert words[:2] == ["rlhf", "ppo"] and words[2:4] == ["--config", "/config/ppo.yaml"]
    tree = merge_trees(yaml.safe_load(config_map["data"]["ppo.yaml"]), parse_overrides(words[4:]))
    cfg = for_stage(build_config(tree, "cluster/kuberay-rayjob.yaml"), "ppo")     # every stage rule holds
    assert cfg.run.output_dir == "/runs" and cfg.actors.policy.num_gpus == 1
    spec = job["spec"]["rayClusterSpec"]
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    pods = [spec["headGroupSpec"]["template"]] + [group["template"] for group in spec["workerGroupSpecs"]]
    for pod in pods:
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["spec"]["volumes"]}
        mounts = {m["name"]: m["mountPath"] for c in pod["spec"]["containers"] for m in c["volumeMounts"]}
        assert claims["runs"] == "rlhf-runs" and mounts["runs"] == "/runs"
    head_env = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["valueFrom"]["secretKeyRef"]["name"] for e in head_env if e["name"] == "WANDB_API_KEY"] == ["wandb"]


@pytest.mark.parametrize("script", ["local.sh", "slurm.sbatch"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(CLUSTER / script)], capture_output=True).returncode == 0
    text = (CLUSTER / script).read_text()
    assert "127.0.0.1" in text       # local.sh: the whole head on loopback; SLURM: the dashboard on loopback


def test_readmes_link_every_cluster_file():
    cluster_readme = (CLUSTER / "README.md").read_text()
    for path in CLUSTER.iterdir():
        if path.name != "README.md":
            assert f"cluster/{path.name}" in cluster_readme, path.name
    assert "cluster/README.md" in (CLUSTER.parent / "README.md").read_text()
