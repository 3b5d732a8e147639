"""Shared machinery of the trainable roles (policy, value): a DeepSpeed ZeRO engine around an HF model, the
minibatch/micro-batch update loop with global-token normalization, checkpoints, and gathering full weights."""
from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from typing import Callable

import torch

from rlhf.config import EngineSettings, engine_settings
from rlhf.deepspeed_config import trainable_config
from rlhf.lora import adapter_state, add_adapters, is_lora, materialize, plain_model, weight_sources
from rlhf.optim import adamw_settings
from rlhf.sharding import local_plan, micro_batches

from .base import RoleWorker
from .guarded_optimizer import GuardedAdamW, GuardedLambdaLR
from .loading import build_model, is_partitioned
from .memory import rss_mb


class TrainableWorker(RoleWorker):
    def build_engine(self, load: Callable[[], torch.nn.Module], owner: str, total_steps: int = 0) -> None:
        """Build the model with `load()` (partitioned from the start under ZeRO-3: `actors/loading.py`) and wrap it
        in a ZeRO engine with a torch AdamW (no C++ op build) and its LR schedule, all from the settings of
        `owner` ('policy' or 'value' for PPO, 'sft', 'rm'; a supervised stage's `total_steps` from its driver):
        see `rlhf.config.engine_settings`. With LoRA in those settings, adapters are added (`rlhf/lora.py`) and
        only they (and a value model's head) go to the optimizer."""
        import deepspeed

        settings: EngineSettings = engine_settings(self.cfg, owner, total_steps)
        config = trainable_config(settings, self.world_size, self.dtype_name)
        self.rss_before_model_mb = rss_mb()
        model = build_model(load, config)
        self.built_partitioned = is_partitioned(model)
        if self.cfg.model.gradient_checkpointing:
            model.config.use_cache = False
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if settings.lora is not None:
            model = add_adapters(model, settings.lora)
        self.lora = is_lora(model)
        params = [p for p in model.parameters() if p.requires_grad]
        # an update with a non-finite loss or gradient on any rank is skipped on all of them (the guard's all-reduce)
        optimizer = GuardedAdamW(params, self.device, lr=settings.lr, weight_decay=settings.weight_decay,
                                 **adamw_settings())
        scheduler = GuardedLambdaLR(optimizer, settings.lr_multiplier())
        self.guard = optimizer
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config, dist_init_required=False)
        if self.world_size == 1 and settings.zero.zero_stage == 0:
            # one rank: DeepSpeed's all-reduce would still flatten every gradient into a buffer and copy it back
            self.engine.enable_backward_allreduce = False
        self.runner = self.engine
        self.micro_batch_size = settings.micro_batch_size
        self.zero_stage = settings.zero.zero_stage

    def parameter_counts(self) -> dict:
        """Elements of the model's parameters held by this rank and in the whole model, and whether the model was
        already partitioned when it was built (ZeRO-3: it never existed whole on any rank)."""
        params = list(self.engine.module.parameters())
        local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
        full = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in params)
        return {"local": local, "full": full, "built_partitioned": self.built_partitioned}

    # ---- forward -------------------------------------------------------------------------------------------

    def forward_batches(self, exp, fn) -> torch.Tensor:
        """`fn` on this rank's shard in micro-batches, without gradients (eval mode); concatenated."""
        self.engine.eval()
        return self.map_shard(exp, self.micro_batch_size, fn)

    # ---- training ------------------------------------------------------------------------------------------

    def global_sum(self, value: float) -> float:
        """`value` summed over the role's ranks (exact for counts: float64)."""
        if self.world_size == 1:
            return float(value)
        import torch.distributed as dist

        total = torch.tensor([float(value)], dtype=torch.float64, device=self.device)    # NCCL: on the GPU
        dist.all_reduce(total)
        return float(total.item())

    def run_updates(self, exp, plan: list[torch.Tensor], micro_loss, count=None) -> dict:
        """One optimizer step per minibatch of `plan` (global row indices) on `exp`, this rank's block of the batch
        (any batch with `select`; rank r of W holds rows [r*n, (r+1)*n)).

        Each rank trains on the rows of every minibatch that lie in its block (`minibatch_plan` gives every block
        the same number) and accumulates over micro-batches.
        `micro_loss(micro, global_tokens, update_index, micro_index)` returns (loss, stats) with token sums already
        divided by the minibatch's *global* token count (the ranks' counts summed). DeepSpeed averages gradients
        over ranks, so the loss is multiplied by the world size; accumulation is not rescaled
        (`scale_wrt_gas=False`). Together: the gradient is the same whatever the number of ranks and micro-batches.
        An update whose loss or gradients are not finite on any rank is skipped on every rank (`GuardedAdamW`; or
        DeepSpeed's own check of the global norm) and leaves no trace in the stats.
        `count(rows_batch)` gives what the loss is normalized by (default: response tokens of an Experience).
        Returns the stats summed over applied updates, their number, which updates were skipped (in order), the
        mean gradient norm of the applied ones and the LR.
        """
        count = count or (lambda batch: batch.response_mask.sum().item())
        self.engine.train()
        sums: dict = defaultdict(float)
        grad_norms, skipped = [], []
        accumulation = self.engine.gradient_accumulation_steps()
        start = self.rank * len(exp)
        for update, rows in enumerate(local_plan(plan, start, start + len(exp))):
            mine = exp.select(rows)
            global_tokens = self.global_sum(count(mine))
            micros = micro_batches(mine, self.micro_batch_size)
            assert len(micros) == accumulation, "the config check keeps minibatch = actors x micro x accumulation"
            update_sums, loss_finite, norm = defaultdict(float), True, None
            for micro_index, micro in enumerate(micros):
                self.rebalance_threads()
                loss, stats = micro_loss(micro, global_tokens, update, micro_index)
                loss_finite = loss_finite and bool(torch.isfinite(loss.detach()).all())
                self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
                if micro_index == accumulation - 1:
                    if self.zero_stage == 0:
                        # ZeRO-0 does not record the norm; gradients are all-reduced at this point
                        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
                        norm = float(torch.nn.utils.get_total_norm(grads))
                    self.guard.begin_update(loss_finite)
                    deepspeed_skips = self.engine.skipped_steps
                self.engine.step()
                for key, value in stats.items():
                    update_sums[key] += float(value)
            if self.zero_stage > 0:
                norm = self.engine.get_global_grad_norm()
            bad = self.guard.skipped or self.engine.skipped_steps > deepspeed_skips
            skipped.append(bad)
            if bad:
                continue
            for key, value in update_sums.items():
                sums[key] += value
            if norm is not None:
                grad_norms.append(float(norm))
        return {"sums": dict(sums), "updates": skipped.count(False), "skipped": skipped,
                "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else 0.0,
                "lr": self.scheduler.get_last_lr()[0]}

    # ---- weights and checkpoints ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def gathered(self, params: list | None = None):
        """Full `params` (default: all) on every rank for the duration (ZeRO-3 gathers them, a collective over the
        role's ranks; other stages hold them already)."""
        if self.zero_stage == 3:
            import deepspeed

            params = list(self.engine.module.parameters()) if params is None else params
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                yield self.engine.module
        else:
            yield self.engine.module

    @functools.cached_property
    def weight_sources(self) -> list:
        """What each tensor of the plain model (the rollout's, an export's) is made from (`rlhf/lora.py`)."""
        return weight_sources(self.engine.module)

    def plain_weights(self) -> dict | None:
        """The plain model's weights by name (LoRA merged in) on rank 0, None elsewhere. Collective under ZeRO-3."""
        with self.gathered() as module:
            if self.rank != 0:
                return None
            params = dict(module.named_parameters())
            return {source.name: materialize(source, [params[p] for p in source.params]).cpu().clone()
                    for source in self.weight_sources}

    def full_state_dict(self) -> dict | None:
        """The whole model's state dict on rank 0 (None elsewhere). Collective under ZeRO-3: call on all ranks."""
        with self.gathered() as module:
            if self.rank != 0:
                return None
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    # ---- weight sync to rollout actors (actors/weight_sync.py) ------------------------------------------------

    def publish_weights(self, measure: bool = True):
        """Gather (collective under ZeRO-3) and put the full weights in the object store once; rank 0 returns
        ([ref], extra peak MiB or None when not `measure`d), the other ranks None."""
        from .memory import ExtraPeakMemory
        from .weight_sync import publish

        with ExtraPeakMemory(self.device, measure) as memory:
            state = self.plain_weights()
            published = publish(state) if self.rank == 0 else None
            del state
        return (published, memory.extra_mb) if self.rank == 0 else None

    def weight_plan(self, bucket_mb: float) -> list:
        """The buckets of (name, shape, dtype) the collective sync sends, in order (the same on every rank)."""
        from .weight_sync import bucket_plan

        params = dict(self.engine.module.named_parameters())
        named = [(source.name, tuple(getattr(p, "ds_shape", p.shape)), str(p.dtype).removeprefix("torch."))
                 for source in self.weight_sources for p in [params[source.params[0]]]]
        return bucket_plan(named, bucket_mb)

    def host_weight_sync(self, world_size: int, timeout_s: float) -> tuple[str, int]:
        """Rank 0: host the store of the weight-sync group; returns its (host, port)."""
        from .weight_sync import host_store

        self._sync_store, host, port = host_store(world_size, timeout_s)
        return host, port

    def join_weight_sync(self, world_size: int, timeout_s: float) -> None:
        """Rank 0: join the weight-sync group as its rank 0, over the store hosted by `host_weight_sync`."""
        from .weight_sync import SyncGroup

        self.weight_sync = SyncGroup(self._sync_store, 0, world_size, timeout_s, self.device)

    def broadcast_weights(self, plan: list, measure: bool = True) -> float | None:
        """Every rank: gather one bucket at a time (ZeRO-3: with the adapters its LoRA weights are merged from);
        rank 0 flattens and broadcasts it. Returns rank 0's extra peak memory in MiB (None when not `measure`d)."""
        from .memory import ExtraPeakMemory, releasing_between

        params = dict(self.engine.module.named_parameters())
        sources = {source.name: source for source in self.weight_sources}
        failure = None
        with ExtraPeakMemory(self.device, measure) as memory:
            for bucket in releasing_between(plan, self.device):
                chosen = [sources[name] for name, _, _ in bucket]
                with self.gathered([params[p] for source in chosen for p in source.params]):
                    if self.rank == 0 and failure is None:
                        # a bucket of one plain tensor (e.g. an embedding larger than the bucket) is sent uncopied
                        tensors = [params[s.params[0]].detach() if s.scaling is None and len(chosen) == 1
                                   else materialize(s, [params[p] for p in s.params]) for s in chosen]
                        flat = (tensors[0].reshape(-1) if len(tensors) == 1
                                else torch.cat([t.reshape(-1) for t in tensors])).to(self.device)
                        del tensors
                        try:
                            self.weight_sync.broadcast(flat)
                        except RuntimeError as error:     # a lost rollout actor: keep gathering with the other
                            failure = error               # policy ranks (none may hang in a gather), then raise
                        del flat
        if failure is not None:
            raise failure
        return memory.extra_mb if self.rank == 0 else None

    def save_checkpoint(self, folder: str) -> None:
        """Model, optimizer and scheduler state of every rank, in DeepSpeed's layout (collective)."""
        self.engine.save_checkpoint(folder, tag="state", save_latest=False, exclude_frozen_parameters=self.lora)

    def load_checkpoint(self, folder: str) -> None:
        """The state `save_checkpoint` wrote (with LoRA: the adapters; the frozen base is the one loaded at start)."""
        path, _ = self.engine.load_checkpoint(folder, tag="state", load_optimizer_states=True,
                                              load_lr_scheduler_states=True, load_module_strict=not self.lora)
        if path is None:
            raise FileNotFoundError(f"no {self.role} checkpoint in {folder}")

    def export_hf(self, folder: str, tokenizer_path: str, adapter_folder: str | None = None,
                  base_path: str | None = None) -> None:
        """save_pretrained + tokenizer on rank 0 (collective under ZeRO-3). With LoRA, `folder` gets the merged
        model (loadable without PEFT) and `adapter_folder` the adapter alone, on top of `base_path`."""
        from rlhf.models import export_adapter, export_hf, load_tokenizer

        if not self.lora:
            state = self.full_state_dict()
            if self.rank == 0:
                export_hf(self.engine.module, load_tokenizer(tokenizer_path), folder, state_dict=state)
            return
        merged = self.plain_weights()
        with self.gathered() as module:
            adapter = adapter_state(module, module.state_dict()) if self.rank == 0 else None
        if self.rank == 0:
            export_hf(plain_model(self.engine.module), load_tokenizer(tokenizer_path), folder, state_dict=merged)
            if adapter_folder:
                export_adapter(self.engine.module, adapter, adapter_folder, base_path)


def reduce_train_stats(per_rank: list[dict], prefix: str) -> dict:
    """Sum token-normalized stats over ranks, average over applied updates; grad norm and LR from rank 0; the
    number of updates skipped for a non-finite loss or gradient norm (the same on every rank)."""
    updates = per_rank[0]["updates"]
    out = {}
    for rank_stats in per_rank:
        for key, value in rank_stats["sums"].items():
            out[key] = out.get(key, 0.0) + value / updates
    if updates:
        out[f"{prefix}/grad_norm"] = per_rank[0]["grad_norm"]
    out[f"{prefix}/lr"] = per_rank[0]["lr"]
    out[f"{prefix}/skipped_updates"] = sum(per_rank[0]["skipped"])
    return out
