"""Several nodes: a three-node Ray cluster on this machine runs PPO with the policy's and the value model's ranks
spread over nodes (process groups formed across them, the run directory probed from every checkpoint writer). After
step 1 a worker node holding a policy rank is removed: the run recreates its groups on the nodes left, replays from the
start (no checkpoint yet) and ends at its planned step with the metrics of the one-node run; placement.json says
where each rank ended."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from launch.runlog import read_metrics
from tests.e2e.test_equivalence import COMPARED

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_ppo_on_three_nodes_survives_a_lost_node_and_matches_one_node(layout_run, tmp_path, model_cache):
    baseline = layout_run(1, 0)
    done = subprocess.run([sys.executable, "-m", "tests.e2e.multinode_driver", str(tmp_path), model_cache],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = Path(done.stdout.split("RUN_DIR=", 1)[1].splitlines()[0])
    removed = done.stdout.split("REMOVED=", 1)[1].splitlines()[0]
    assert removed, f"no node was removed: {done.stderr[-3000:]}"
    before = json.loads(done.stdout.split("PLACED=", 1)[1].splitlines()[0])
    after = json.loads((run_dir / "placement.json").read_text())
    nodes = lambda placement, role: {entry.split("/")[1] for entry in placement[role]}
    assert len(nodes(before, "policy")) == 2 and len(nodes(before, "value")) == 2     # each group spans two nodes
    assert any(removed.startswith(node) for node in nodes(before, "policy"))
    assert not any(removed.startswith(node) for role in after for node in nodes(after, role))  # none left there
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows] == [1, 2]
    assert rows[-1]["run/recoveries"] == 1
    # every rank that was on the lost node is named lost, not only those the control store had marked dead first
    on_removed = {role: [rank for rank, entry in enumerate(ranks) if removed.startswith(entry.split("/")[1])]
                  for role, ranks in before.items()}
    lost = ast.literal_eval((run_dir / "errors.log").read_text().split(" lost ", 1)[1].splitlines()[0])
    assert lost == {role: ranks for role, ranks in on_removed.items() if ranks} and "policy" in lost
    for expected, got in zip(baseline, rows):
        for key in COMPARED:
            assert got[key] == pytest.approx(expected[key], rel=2e-4, abs=2e-5), (expected["step"], key)
