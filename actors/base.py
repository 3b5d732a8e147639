"""The base of every role worker: its rank, thread budget, device, dtype and torch.distributed group."""
from __future__ import annotations

import datetime
import functools
import importlib
import os
import socket

import torch

from rlhf import forward
from rlhf.config import Config
from rlhf.models import apply_cpu_matmul, attention_kernel, default_device, torch_dtype
from rlhf.seeding import derive_seed
from rlhf.sharding import concat, map_rows

from .memory import peak_memory_mb
from .phase_board import PhaseBoard


def in_phase(phase: str):
    """A worker method that is `phase`'s call: it runs with the phase's threads (taking its node peers' cores as
    they finish) and says when it is done (`RoleWorker.use_threads`, `phase_done`)."""

    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            self.use_threads(phase)
            try:
                return method(self, *args, **kwargs)
            finally:
                self.phase_done()

        return run

    return wrap


def distributed_backend() -> str:
    """NCCL on GPUs, gloo on CPU, chosen automatically."""
    return "nccl" if torch.cuda.is_available() else "gloo"


class RoleWorker:
    """One Ray actor of a role. Subclasses load their model in `setup` and expose coarse, whole-batch methods."""

    def __init__(self, config: dict, role: str, rank: int, world_size: int, num_threads: int):
        self.cfg = Config.model_validate(config)
        self.role, self.rank, self.world_size = role, rank, world_size
        # same seed on every rank and layout: a freshly initialised head (value model) is identical everywhere
        torch.manual_seed(derive_seed(self.cfg.run.seed, "model_init"))
        torch.set_num_threads(num_threads)
        os.environ["OMP_NUM_THREADS"] = str(num_threads)
        self.threads, self.phase_shares, self.board, self.share = num_threads, {}, None, None
        self.device = default_device()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        apply_cpu_matmul(self.cfg.precision.cpu_matmul, self.device)
        self.dtype = torch_dtype(self.cfg.precision.dtype, self.device)
        self.dtype_name = "bf16" if self.dtype == torch.bfloat16 else "fp32"
        self.attention = attention_kernel(self.cfg.precision.attention, self.device)

    def node(self) -> str:
        """The node this actor runs on, as 'address/node id prefix' (named in errors and placement.json)."""
        import ray

        return f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}"

    def sees(self, path: str) -> bool:
        """Whether `path` exists from this actor's node (the shared-filesystem probe of the run directory)."""
        return os.path.exists(path)

    def cores(self) -> int:
        """The CPU cores this actor's process may run on."""
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def set_phase_threads(self, shares: dict, board_token: str | None = None) -> None:
        """This actor's part of its node in each phase it works in (`rlhf.placement_rules.PhaseShare`);
        `board_token` names the run's `PhaseBoard`, through which it takes its node peers' cores once they are done."""
        if self.board is not None:
            self.board.close()
        self.phase_shares = dict(shares)
        has_peers = any(share.peers for share in shares.values())      # only then is there a core to take or give
        self.board = PhaseBoard(board_token, self.role, self.rank) if board_token and has_peers else None

    def use_threads(self, phase: str) -> None:
        """Run the coming work with `phase`'s thread count (this actor's own without one)."""
        self.share = self.phase_shares.get(phase)
        if self._shares_cores():
            self.board.begin()
        self._set_threads(self.share.threads() if self.share else self.threads)

    def _shares_cores(self) -> bool:
        """Whether this phase's call shares the node with peers (the board's files are read and written then)."""
        return self.board is not None and self.share is not None and bool(self.share.peers)

    def rebalance_threads(self) -> None:
        """Between micro-batches: take the cores of the phase's node peers that are done."""
        if self._shares_cores():
            self._set_threads(self.share.threads(self.board.done_peers(self.share.peers)))

    def phase_done(self) -> None:
        """The phase's call is finished: a peer still working may take this actor's cores."""
        if self._shares_cores():
            self.board.mark_done()
        self.share = None

    def close_phase_board(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    @staticmethod
    def _set_threads(wanted: int) -> None:
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    def address(self) -> tuple[str, int]:
        """This node's address and a free port, for rank 0 to host the group's rendezvous."""
        import ray

        host = ray.util.get_node_ip_address()
        with socket.socket() as sock:
            sock.bind(("", 0))
            return host, sock.getsockname()[1]

    def init_distributed(self, master_addr: str, master_port: int) -> None:
        """Join the role's torch.distributed group through DeepSpeed (gloo on CPU, NCCL on GPU)."""
        import deepspeed

        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0", LOCAL_SIZE="1")
        if self.device.type == "cpu":
            # the shared-memory all-reduce op is only for CPU inference and takes ~60 s to compile
            importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
        deepspeed.init_distributed(dist_backend=distributed_backend(), auto_mpi_discovery=False,
                                   init_method=f"tcp://{master_addr}:{master_port}", rank=self.rank,
                                   world_size=self.world_size,
                                   # every collective of the role's group fails after this instead of hanging
                                   timeout=datetime.timedelta(seconds=self.cfg.run.phase_timeout_s))

    @staticmethod
    def rows(pieces: list):
        """This rank's block of a batch, from the object references of its pieces (`ActorGroup.call_shards`): the
        driver cut the batch, so a worker reads only its own rows."""
        import ray

        from .group import ResultsLost

        try:
            return concat(ray.get(list(pieces)))
        except ray.exceptions.ObjectLostError as error:
            raise ResultsLost(f"a piece of the batch was lost with its node ({type(error).__name__})") from None

    def map_shard(self, batch, size: int, fn) -> torch.Tensor:
        """`fn` on each micro-batch of `size` rows of this rank's block (rows of similar length together:
        `rlhf.sharding.by_length`) without gradients; outputs in row order (float, on CPU). Every rank holds an
        equal block, so every rank walks the same number of micro-batches, as ZeRO-3's collective parameter gathers
        require."""
        def rebalanced(micro):
            self.rebalance_threads()
            return fn(micro)

        with torch.no_grad():
            return map_rows(batch, size, rebalanced)

    def model_outputs(self, exp, **kwargs):
        """The role's model (`self.runner`: a DeepSpeed engine or a plain module) on a batch's sequences."""
        return forward.model_outputs(self.runner, exp, self.device, **kwargs)

    def response_token_stats(self, exp, with_entropy: bool = False):
        """(log-probs of the sampled response tokens, their entropy or zeros) of the role's model at the rollout
        temperature (`rlhf.forward.response_token_stats`)."""
        return forward.response_token_stats(self.runner, exp, self.device, self.cfg.rollout.temperature,
                                            self.cfg.model.logprobs_chunk, with_entropy, self.keeps_logits)

    @functools.cached_property
    def keeps_logits(self) -> bool:
        """Whether the model's forward takes `logits_to_keep` (asked once, after `setup` set `self.runner`)."""
        return forward.keeps_logits(self.runner)

    def peak_memory_mb(self) -> dict:
        """Peak memory of this actor so far (`actors/memory.py`); with the resident memory it had just before its
        model was built, where it recorded one (the libraries' share, to subtract)."""
        stats = peak_memory_mb(self.device)
        if hasattr(self, "rss_before_model_mb"):
            stats["host_rss_before_model_mb"] = self.rss_before_model_mb
        return stats

    def ready(self) -> bool:
        return True
