"""The coarse operations of a PPO run on its role groups: generate, score (reference, reward, value and old
log-probs concurrently), train (policy and value concurrently), sync weights, save, load, export. The samples' token
ids go into the object store once, in pieces cut so that each scoring and training rank reads only its block; the
driver holds the rest (`Rollout`)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import ray
import torch

from rlhf.experience import Experience
from rlhf.generation import SamplingParams
from rlhf.placement_rules import PHASE_ROLES
from rlhf.sharding import covering, sample_layout, shard_bounds, shard_slice

from .group import ActorDiedError, Calls, ResultsLost, RoleError, RoleGroups, RoleSpec, gather, gather_all
from .policy import PolicyWorker
from .reference import ReferenceWorker
from .reward import RewardWorker
from .rollout import RolloutWorker
from .trainable import reduce_train_stats
from .value import ValueWorker
from .weight_sync import METHODS as WEIGHT_SYNC_METHODS


# seconds to wait for the cluster to declare dead the actors of a lost node (Ray's node health checks: about 15 s)
NODE_LOSS_SETTLE_S = 60.0

# what the trainable ranks get from the driver besides the samples' pieces: scoring's outputs and the advantages
TRAINED_FIELDS = ("old_logprobs", "reference_logprobs", "values", "advantages", "returns")

# roles that train (every rank writes its part of each checkpoint)
TRAINABLE_ROLES = ("policy", "value")

# roles whose actors are recreated in place when they die (weights from their path; the rollout's re-sent)
FROZEN_ROLES = ("rollout", "reference", "reward")


# how a collective (gloo, NCCL) fails on a surviving rank when a peer's process or node is gone
PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL communicator was aborted",
             "remote process exited")


def lost_peer(error: Exception) -> bool:
    """Whether a worker's error is its collective losing a peer (the peer's death may not be reported yet)."""
    return any(text in str(error) for text in PEER_LOST)


class RecoveryError(RuntimeError):
    """A lost actor the run cannot recover from, worded as one line."""


class TrainableRanksLost(RuntimeError):
    """Trainable ranks were lost and every trainable group recreated with its initial weights: the driver reloads
    the last complete checkpoint and replays the steps after it."""


@dataclass
class PendingGeneration:
    """A generation started on the rollout actors: each rank's arguments and number of returns (to run it again
    after a recovery), its calls (futures: the summaries), and where each piece of the samples will be."""
    args: list[tuple]
    num_returns: list[int]
    bounds: list[tuple[int, int]]                   # the rows of each piece, in order
    calls: Calls | None = None
    pieces: list[tuple[int, int, object]] | None = None
    started: float = 0.0          # when it was sent (time.perf_counter)


@dataclass
class Rollout:
    """A step's samples. The driver holds `experience` without token ids; the token ids stay in the object store,
    in `pieces` (start row, stop row, reference) cut so that every scoring and training rank reads exactly its
    block."""
    experience: Experience
    pieces: list[tuple[int, int, object]]


@dataclass
class ModelPaths:
    policy: str
    reference: str | None      # None: the policy actors compute the reference log-probs (LoRA, adapters off)
    value: str | None
    tokenizer: str


def ppo_role_specs(cfg, paths: ModelPaths) -> list[RoleSpec]:
    frozen_distributed = cfg.deepspeed.frozen_zero_stage == 3
    specs = [RoleSpec("policy", PolicyWorker, (paths.policy,), distributed=True)]
    if paths.reference is not None:
        specs.append(RoleSpec("reference", ReferenceWorker, (paths.reference,), distributed=frozen_distributed))
    specs += [RoleSpec("reward", RewardWorker, (paths.tokenizer,),
                      distributed=frozen_distributed and cfg.reward.model is not None),
             RoleSpec("rollout", RolloutWorker, (paths.policy, paths.tokenizer))]
    if cfg.uses_critic:
        specs.append(RoleSpec("value", ValueWorker, (paths.value,), distributed=True))
    return specs


class RoleSet:
    def __init__(self, cfg, paths: ModelPaths, run_dir=None):
        """`run_dir`: the trainable ranks check they see it before loading anything (they write checkpoints
        there); its errors.log gets the full remote traceback of every failure recovered from."""
        self.cfg, self.paths = cfg, paths
        self.errors_log = None if run_dir is None else Path(run_dir) / "errors.log"
        self.recoveries = 0
        self.unfinished: PendingGeneration | None = None     # a generation sent and not yet waited for
        self.groups = RoleGroups(cfg, ppo_role_specs(cfg, paths), shared_dir=run_dir, writers=TRAINABLE_ROLES)
        self.policy, self.value = self.groups["policy"], self.groups.get("value")
        self.reward, self.rollout = self.groups["reward"], self.groups["rollout"]
        # without reference actors the policy actors score the reference too, with their adapters off
        self.reference = self.groups.get("reference")
        try:
            self.weight_sync = WEIGHT_SYNC_METHODS[cfg.rollout.weight_sync](self.policy, self.rollout, cfg)
            self.apply_phase_threads()
        except BaseException:
            self.groups.shutdown()
            raise

    def apply_phase_threads(self) -> None:
        """In synchronous mode, each actor's torch threads per phase (`RoleGroups.apply_phase_threads`): the
        phases run one after another, so a phase's actors may use what the run reserved on their node."""
        self.phase_plan: dict = {}
        if not self.cfg.rollout.async_:
            self.phase_plan = self.groups.apply_phase_threads(PHASE_ROLES)

    # ---- one PPO step ----------------------------------------------------------------------------------------

    def readers(self) -> list:
        """The groups that read the samples (scoring and training), each rank its own block."""
        return [g for g in (self.policy, self.reference, self.reward, self.value) if g is not None]

    def start_generate(self, prompt_ids, prompt_mask, prompt_index, params: SamplingParams,
                       step: int) -> PendingGeneration:
        """Each rollout actor starts sampling its block of the prompts (split by token counts, seeded by step and
        rank); returns at once. Calls on an actor run in order: a weight sync sent after this reaches the rollout
        actors after it."""
        n = params.n_samples_per_prompt
        work = (prompt_mask.sum(dim=1) + params.max_new_tokens).tolist()     # what sampling a prompt costs
        rows, cuts = sample_layout(work, n, len(self.rollout), [len(group) for group in self.readers()])
        args, num_returns, bounds = [], [], []
        for start, stop in zip(rows, rows[1:]):
            mine = [c - start for c in cuts if start <= c <= stop]
            prompts = slice(start // n, stop // n)
            args.append((prompt_ids[prompts], prompt_mask[prompts], prompt_index[prompts], params, "sampling", step,
                         mine))
            num_returns.append(len(mine))          # the summary, then one object per piece
            bounds += [(start + a, start + b) for a, b in zip(mine, mine[1:])]
        pending = PendingGeneration(args, num_returns, bounds, started=time.perf_counter())
        self._launch(pending)
        self.unfinished = pending
        return pending

    def _launch(self, pending: PendingGeneration) -> None:
        """Send the generation's calls; its pieces get the references they will return."""
        calls = self.rollout.call_each("generate_pieces", pending.args, pending.num_returns)
        refs = [ref for returned in calls.futures for ref in returned[1:]]
        pending.pieces = [(a, b, ref) for (a, b), ref in zip(pending.bounds, refs, strict=True)]
        pending.calls = Calls(calls.role, calls.method, [returned[0] for returned in calls.futures], calls.timeout_s)

    def finish_generate(self, pending: PendingGeneration) -> Rollout:
        """The samples of a started generation (the driver fetches only their summaries); if rollout actors were
        lost and recreated, it runs again on them (same seeds, the current policy weights)."""
        def phase():
            if pending.calls is None:
                self._launch(pending)
            calls, pending.calls = pending.calls, None
            return gather(calls)

        rollout = Rollout(Experience.concat(self.recovering(phase)), pending.pieces)
        self.unfinished = None
        return rollout

    def shards_of(self, rollout: Rollout, group) -> list[list]:
        """Per rank of `group`, the references of the pieces of its block."""
        bounds = shard_bounds(len(rollout.experience), len(group))
        return [covering(rollout.pieces, a, b) for a, b in zip(bounds, bounds[1:])]

    def score(self, rollout: Rollout) -> Experience:
        """Old log-probs (policy), reference log-probs, rewards and values, all roles at once, each rank on its
        block; returns the driver's experience with them."""
        read = lambda group, method: (group, method, self.shards_of(rollout, group))
        calls = {"old_logprobs": read(self.policy, "logprobs"),
                 "reference_logprobs": (read(self.reference, "logprobs") if self.reference is not None
                                        else read(self.policy, "reference_logprobs")),
                 "scores": read(self.reward, "scores")}
        if self.value is not None:
            calls["values"] = read(self.value, "values")
        results = self.recovering(lambda: gather_all(*[group.call_shards(method, shards)
                                                       for group, method, shards in calls.values()]))
        return rollout.experience.replace(**{name: torch.cat(shards) for name, shards in zip(calls, results)})

    def train(self, rollout: Rollout, exp: Experience, plan: list, kl_coef: float, ptx=None) -> tuple[dict, dict]:
        """Policy and value updates run concurrently, each rank on its block: its pieces of the samples and its rows
        of what scoring and the advantages added (put once per block, shared by both roles). Returns the stats and,
        per role, which of its updates were skipped for a non-finite loss or gradient norm."""
        puts = {}

        def args(group, *extra):
            bounds = shard_bounds(len(exp), len(group))
            out = []
            for a, b in zip(bounds, bounds[1:]):
                if (a, b) not in puts:
                    puts[(a, b)] = ray.put({name: getattr(exp, name)[a:b] for name in TRAINED_FIELDS
                                            if getattr(exp, name) is not None})
                out.append((covering(rollout.pieces, a, b), puts[(a, b)], *extra))
            return out

        def ptx_shard(rank: int):
            if ptx is None:
                return None
            rows = shard_slice(ptx[0].shape[1], rank, len(self.policy))
            return ptx[0][:, rows], ptx[1][:, rows]

        policy_args = [(*a, plan, kl_coef, ptx_shard(rank)) for rank, a in enumerate(args(self.policy))]
        value_args = args(self.value, plan) if self.value is not None else None

        def train():
            calls = [self.policy.call_each("train", policy_args)]
            if value_args is not None:
                calls.append(self.value.call_each("train", value_args))
            return gather_all(*calls)

        results = self.recovering(train)       # a lost rank here ends the run with one line and errors.log
        stats = reduce_train_stats(results[0], "policy")
        skipped = {"policy": results[0][0]["skipped"]}
        if self.value is not None:
            stats.update(reduce_train_stats(results[1], "value"))
            skipped["value"] = results[1][0]["skipped"]
        return stats, skipped

    def sample_rows(self, rollout: Rollout, rows: list[int]) -> Experience:
        """Some rows with their token ids (what the driver logs), read from the pieces that hold them only."""
        wanted = [(a, b, ref) for a, b, ref in rollout.pieces if any(a <= r < b for r in rows)]
        parts = ray.get([ref for _, _, ref in wanted])
        return Experience.concat([part.select([r - a for r in rows if a <= r < b])
                                  for (a, b, _), part in zip(wanted, parts)])

    def sync_weights(self, after_issue=None) -> dict:
        """New policy weights into every rollout actor; returns `time/weight_sync` and the policy's extra memory.
        `after_issue()` runs (once) when the sync's calls are sent: what it queues on the rollout actors (the next
        generation) runs with the new weights while the driver waits."""
        once = [after_issue] if after_issue is not None else []
        return self.recovering(lambda: self.weight_sync(once.pop() if once else None))

    # ---- lost actors ---------------------------------------------------------------------------------------------

    def recovering(self, phase):
        """`phase()`; if it failed because actors of a frozen role died, recreate those roles in place (their
        weights from their paths; the rollout actors get the current policy weights again) and run it again: same
        seeds, same result, no rollback. If trainable ranks died, recreate every trainable group (and the rollout
        group, whose weight-sync group they shared) and raise `TrainableRanksLost` for the driver to replay from the
        last checkpoint. More than `run.max_restarts` recoveries in a run end it with one line."""
        while True:
            try:
                return phase()
            except Exception as error:
                peer, lost = lost_peer(error), isinstance(error, ResultsLost)
                if not isinstance(error, RoleError) and not peer and not lost:
                    raise                  # the worker's own error (bad input, a crashing reward function ...)
                # an actor reported unavailable, a collective whose peer went away, or samples gone from the object
                # store may be on a node the cluster has not yet declared lost
                unavailable = isinstance(error, ActorDiedError) or peer or lost
                dead = self.groups.dead_roles(NODE_LOSS_SETTLE_S if unavailable else 0.0)
                if not dead and not lost:
                    raise
                self._record(error, dead)
                where = "; ".join([f"{role} actor {rank} on node {self.groups[role].node(rank)}"
                                   for role, ranks in dead.items() for rank in ranks]
                                  + (["this step's samples"] if lost else []))
                if self.recoveries >= self.cfg.run.max_restarts:
                    raise RecoveryError(f"lost {where} ({error}) after {self.recoveries} recoveries in this run "
                                        "(run.max_restarts): stopping, not looping") from error
                self.recoveries += 1
                # samples lost with their node cannot be made again as they were (async mode: other weights), so
                # the step is replayed from the last checkpoint like a lost trainable rank
                trainable_lost = lost or any(role not in FROZEN_ROLES for role in dead)
                recreate = set(dead)
                if trainable_lost:
                    recreate |= set(self.trainable())
                    if self.cfg.rollout.weight_sync == "collective":
                        recreate.add("rollout")
                print(f"recovering: lost {where}; recreating {', '.join(sorted(recreate))} "
                      f"({self.recoveries} of at most {self.cfg.run.max_restarts})", flush=True)
                for role in sorted(recreate):
                    self.groups.recreate(role)
                if "rollout" in recreate and self.unfinished is not None:
                    self.unfinished.calls = None    # sent to the lost actors: sent again when it is waited for
                self.apply_phase_threads()          # the new actors may be on other nodes
                if trainable_lost:
                    self.weight_sync = WEIGHT_SYNC_METHODS[self.cfg.rollout.weight_sync](self.policy, self.rollout,
                                                                                         self.cfg)
                    raise TrainableRanksLost(where) from error
                if "rollout" in dead:
                    self.weight_sync = WEIGHT_SYNC_METHODS[self.cfg.rollout.weight_sync](self.policy, self.rollout,
                                                                                         self.cfg)
                    self.weight_sync()

    def _record(self, error: Exception, dead: dict) -> None:
        """The whole failure, remote traceback included, appended to `errors_log`."""
        if self.errors_log is None:
            return
        import datetime
        import traceback

        with open(self.errors_log, "a") as log:
            log.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')} lost {dead}\n")
            log.write("".join(traceback.format_exception(error)))

    # ---- checkpoints and export --------------------------------------------------------------------------------

    def trainable(self) -> dict:
        return {role: self.groups[role] for role in TRAINABLE_ROLES if self.groups.get(role) is not None}

    def save(self, folder) -> None:
        gather_all(*[group.call("save_checkpoint", f"{folder}/{name}") for name, group in self.trainable().items()])

    def load(self, folder) -> None:
        gather_all(*[group.call("load_checkpoint", f"{folder}/{name}") for name, group in self.trainable().items()])

    def export_policy(self, folder, adapter_folder) -> None:
        """The policy in HF format into `folder`; with LoRA that is the merged model, and the adapter goes to
        `adapter_folder` (on top of the initial policy)."""
        self.policy.run("export_hf", str(folder), self.paths.tokenizer, str(adapter_folder), self.paths.policy)

    def placement(self) -> dict:
        """role -> the node of each rank ('address/node id'), as the run was placed (and recreated)."""
        return {role: list(group.nodes) for role, group in self.groups.groups.items()}

    def peak_memory(self) -> dict:
        out = {}
        for name, group in self.groups.groups.items():
            for rank, stats in enumerate(group.run("peak_memory_mb")):
                out[f"{name}[{rank}]"] = stats
        return out

    def shutdown(self) -> None:
        self.groups.shutdown()
