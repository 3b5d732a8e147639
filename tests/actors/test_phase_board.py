"""Work-conserving threads within a phase: on one node, an actor still working takes the cores of its phase peers
once they are done (between its micro-batches), and only for peers that finished during its own call; closing the
run's boards leaves no file. In one process: two workers of a 2-core node, as the driver plans them."""
import tempfile
import time
from pathlib import Path

import torch

from actors.base import RoleWorker
from rlhf.placement_rules import PhaseShare, phase_shares
from tests.conftest import small_config


def test_shares_follow_the_peers_that_are_still_working():
    actors = [("policy", 0, "A", 1), ("value", 0, "A", 1), ("reference", 0, "A", 1), ("policy", 1, "B", 1)]
    shares = phase_shares(actors, {"A": 4, "B": 2}, {"train": ("policy", "value")}, whole_nodes=True)
    assert shares[("policy", 0)]["train"] == PhaseShare(4, 1, (("value", 0, 1),))
    assert shares[("policy", 1)]["train"] == PhaseShare(2, 1, ())        # alone on its node: all of it
    share = shares[("value", 0)]["train"]
    assert share.threads() == 2 and share.threads({("policy", 0)}) == 4
    # uneven reservations share in proportion; an actor never drops below its own num_cpus
    assert PhaseShare(6, 2, (("value", 0, 1),)).threads() == 4
    assert PhaseShare(2, 3, (("value", 0, 1),)).threads() == 3


def test_a_worker_takes_its_peers_cores_once_they_are_done(tmp_path, model_cache, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = small_config(tmp_path, model_cache).model_dump(mode="json")
    policy, value = RoleWorker(config, "policy", 0, 1, 1), RoleWorker(config, "value", 0, 1, 1)
    shares = phase_shares([("policy", 0, "A", 1), ("value", 0, "A", 1)], {"A": 2}, {"train": ("policy", "value")})
    previous = torch.get_num_threads()
    try:
        for worker in (policy, value):
            worker.set_phase_threads(shares[(worker.role, 0)], "token")

        def step(first, then):
            """`first` begins its call, then `then`; value finishes first, and policy, between its micro-batches,
            goes from its share (1 thread) to both cores once value is done."""
            first.use_threads("train")
            then.use_threads("train")
            policy.rebalance_threads()
            assert torch.get_num_threads() == 1
            value.phase_done()
            policy.rebalance_threads()
            assert torch.get_num_threads() == 2
            policy.phase_done()

        step(value, policy)
        time.sleep(0.05)        # the rest of the step: a file's time stamp can be a clock tick coarse
        # value's marker of step 1 is older than policy's next call: policy keeps its share until value is done again
        step(policy, value)
        board = Path(tmp_path) / "rlhf-phase-board-token"
        assert sorted(p.name for p in board.iterdir()) == [".policy-0-began", ".value-0-began", "policy-0", "value-0"]
        policy.close_phase_board()
        value.close_phase_board()
        assert not board.exists()
    finally:
        torch.set_num_threads(previous)
