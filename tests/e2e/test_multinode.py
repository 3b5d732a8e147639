"""Several nodes: a three-node Ray cluster on this machine runs PPO with the policy's and the value model's ranks
spread over nodes (process groups formed across them, the run directory probed from every checkpoint writer);
placement.json says where each rank ran, and the metrics equal those of the one-node run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from launch.runlog import read_metrics
from tests.e2e.test_equivalence import COMPARED

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_ppo_on_three_nodes_matches_one_node(layout_run, tmp_path, model_cache):
    baseline = layout_run(1, 0)
    done = subprocess.run([sys.executable, "-m", "tests.e2e.multinode_driver", str(tmp_path), model_cache],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = Path(done.stdout.split("RUN_DIR=", 1)[1].splitlines()[0])
    placement = json.loads((run_dir / "placement.json").read_text())
    nodes = lambda role: {entry.split("/")[1] for entry in placement[role]}
    assert len(nodes("policy")) == 2 and len(nodes("value")) == 2          # each group spans two nodes
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows] == [1, 2]
    for expected, got in zip(baseline, rows):
        for key in COMPARED:
            assert got[key] == pytest.approx(expected[key], rel=2e-4, abs=2e-5), (expected["step"], key)
