"""`rlhf bench`: a fixed PPO workload run for a few steps, reporting samples/s, tokens/s, the median time of each
phase, weight-sync time, peak memory per actor, and the matmul peak of this machine measured in the same run.
The other benchmarks: `bench_weight_sync.py` (`--weight-sync`) and `bench_memory.py` (`--memory`)."""
from __future__ import annotations

import statistics
import tempfile
import time

import torch

from .ppo import PPOTrainer
from .runlog import read_metrics

# The fixed workload (any of it can still be overridden on the command line): a 4-layer, 256-wide Llama,
# 32 prompts x 4 samples x 32 new tokens, 2 PPO minibatches, every role on its own actor.
WORKLOAD = {
    "model": {"tiny": {"num_layers": 4, "hidden_size": 256, "num_heads": 4}},
    "rollout": {"prompts_per_step": 32, "n_samples_per_prompt": 4, "max_new_tokens": 32},
    "ppo": {"num_minibatches": 2},
    "deepspeed": {"policy": {"micro_batch_size": 16}, "value": {"micro_batch_size": 16}},
    "checkpoint": {"export_hf": False},
    "logging": {"wandb_mode": "disabled", "progress_bar": False},
}


def matmul_peak_gflops(size: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def bench_config(cfg, steps: int, explicit_overrides: list[str] | None):
    from rlhf.config import merge_trees, build_config, parse_overrides

    tree = merge_trees(cfg.model_dump(mode="json"), WORKLOAD)
    tree = merge_trees(tree, parse_overrides(explicit_overrides or []))
    tree["run"].update(num_steps=steps + 1, output_dir=tempfile.mkdtemp(prefix="rlhf-bench-"), name="bench")
    tree["checkpoint"].update(every=0, save_at_end=False)   # a benchmark measures steps, not checkpoint I/O
    return build_config(tree, "bench")


def run_bench(cfg, steps: int = 4, explicit_overrides: list[str] | None = None) -> dict:
    cfg = bench_config(cfg, steps, explicit_overrides)
    trainer = PPOTrainer(cfg)
    trainer.run()
    rows = read_metrics(trainer.run_dir)[1:]           # the first step is warm-up
    median = lambda key: statistics.median(row[key] for row in rows)
    report = {key: median(key) for key in rows[0] if key.startswith(("time/", "throughput/"))}
    torch.set_num_threads(max(1, int(cfg.actors.policy.num_cpus)))
    report["machine/matmul_fp32_gflops"] = matmul_peak_gflops()
    print(f"rlhf bench: {steps} measured steps (after 1 warm-up), medians; batch {cfg.rollout_batch_size} samples "
          f"x {cfg.rollout.max_new_tokens} new tokens, policy {cfg.model.policy} {cfg.model.tiny.num_layers}x"
          f"{cfg.model.tiny.hidden_size}, dtype {cfg.precision.dtype}, cpu_matmul {cfg.precision.cpu_matmul}")
    for key, value in report.items():
        print(f"  {key:40s} {value:10.3f}")
    print("  peak memory per actor (MB):")
    for actor, stats in trainer.peak_memory.items():
        print(f"    {actor:16s} " + "  ".join(f"{k} {v:8.0f}" for k, v in stats.items()))
    return report
