"""`rlhf bench --weight-sync`: only the policy and rollout actors of the config, and the policy's new weights sent
to the rollout actors both ways (collective, object store): time per sync and the policy's extra peak memory."""
from __future__ import annotations

import statistics

from actors.group import RoleGroups, RoleSpec
from actors.policy import PolicyWorker
from actors.rollout import RolloutWorker
from actors.weight_sync import METHODS, bucket_numel
from rlhf.config import for_stage
from rlhf.memory_plan import dtype_bytes
from rlhf.models import resolve_model_path

from .ray_session import ray_session


def run_weight_sync_bench(cfg, repeats: int = 4) -> dict:
    """`repeats` syncs each way (after one warm-up) on the config's policy (ranks, ZeRO stage) and rollout actors;
    median time and largest extra peak memory of the policy's rank 0 after the first sync, and that first one's."""
    cfg = for_stage(cfg, "ppo")
    path = resolve_model_path(cfg.model.policy, cfg.model.cache_dir, cfg.model.tiny, "model.policy")
    report = {}
    with ray_session(cfg), RoleGroups(cfg, [RoleSpec("policy", PolicyWorker, (path,), distributed=True),
                                            RoleSpec("rollout", RolloutWorker, (path, path))]) as groups:
        for method, way in METHODS.items():
            sync = way(groups["policy"], groups["rollout"], cfg, measure_every_sync=True)
            rows = [sync() for _ in range(repeats + 1)]
            # the first sync also pays one-time allocations (communication buffers): memory reported both ways
            report[method] = {"seconds": statistics.median(r["time/weight_sync"] for r in rows[1:]),
                              "extra_peak_mb": max(r["memory/weight_sync_extra_mb"] for r in rows[1:]),
                              "first_extra_peak_mb": rows[0]["memory/weight_sync_extra_mb"]}
        plan = groups["policy"].run("weight_plan", cfg.rollout.weight_sync_bucket_mb)[0]
    model_mb = sum(bucket_numel(bucket) for bucket in plan) * dtype_bytes(cfg) / 2**20
    print(f"rlhf bench --weight-sync: {cfg.model.policy} ({model_mb:.0f} MB of weights), policy "
          f"{cfg.actors.policy.num_actors} rank(s) ZeRO-{cfg.deepspeed.policy.zero_stage} -> "
          f"{cfg.actors.rollout.num_actors} rollout actor(s); collective buckets of "
          f"{cfg.rollout.weight_sync_bucket_mb:g} MB ({len(plan)} buckets); medians / largest of {repeats} syncs "
          "after a first one")
    for method, row in report.items():
        print(f"  {method:14s} {row['seconds']:8.3f} s   policy rank 0 extra peak memory "
              f"{row['extra_peak_mb']:8.1f} MB (first sync {row['first_extra_peak_mb']:.1f} MB)")
    return {"model_mb": model_mb, **report}
