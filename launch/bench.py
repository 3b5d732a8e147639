"""`rlhf bench`: named PPO workloads run for a few steps on the actors, reporting samples/s, tokens/s, the median
time of each phase and its share of the machine's matmul peak (measured in the same run), weight-sync time and
peak memory per actor. With `--floor` each workload also runs in this one process with plain PyTorch and
transformers (`rlhf/floor.py`: the same work, no Ray, no DeepSpeed) and the report ends with one line
`ratio distributed/floor: X` per workload (samples/s of the distributed run over the floor's).
The other benchmarks: `bench_weight_sync.py` (`--weight-sync`) and `bench_memory.py` (`--memory`)."""
from __future__ import annotations

import contextlib
import os
import statistics
import tempfile

import torch

from rlhf.config import model_sources
from rlhf.flops import matmul_params, matmul_peak_gflops, phase_flops, throughput
from rlhf.memory_plan import meta_model
from rlhf.models import apply_cpu_matmul, default_device, load_tokenizer, torch_dtype

from .ppo import PPOTrainer, load_prompts, role_paths
from .ray_session import resources_needed
from .runlog import read_metrics

_NO_FILES = {"checkpoint": {"export_hf": False}, "logging": {"wandb_mode": "disabled", "progress_bar": False}}

# Each workload: its variants, each a config tree merged over the base config (the command line still wins).
WORKLOADS: dict[str, dict[str, dict]] = {
    # today's bench: a 4-layer, 256-wide Llama, 32 prompts x 4 samples x 32 new tokens, PPO with 2 minibatches
    "default": {"default": {
        "model": {"tiny": {"num_layers": 4, "hidden_size": 256, "num_heads": 4}},
        "rollout": {"prompts_per_step": 32, "n_samples_per_prompt": 4, "max_new_tokens": 32},
        "ppo": {"num_minibatches": 2},
        "deepspeed": {"policy": {"micro_batch_size": 16}, "value": {"micro_batch_size": 16}},
    }},
    # the tiny 2-layer Llama where the system's own costs show most: GRPO 16 x 4 and PPO (value, GAE) 64 x 1,
    # 32 new tokens, one update per step
    "overhead": {
        "grpo": {"model": {"tiny": {"num_layers": 2, "hidden_size": 64, "num_heads": 4}},
                 "rollout": {"prompts_per_step": 16, "n_samples_per_prompt": 4, "max_new_tokens": 32},
                 "ppo": {"advantage_estimator": "grpo", "num_minibatches": 1},
                 "deepspeed": {"policy": {"micro_batch_size": 64}}},
        "ppo": {"model": {"tiny": {"num_layers": 2, "hidden_size": 64, "num_heads": 4}},
                "rollout": {"prompts_per_step": 64, "n_samples_per_prompt": 1, "max_new_tokens": 32},
                "ppo": {"advantage_estimator": "gae", "num_minibatches": 1},
                "deepspeed": {"policy": {"micro_batch_size": 64}, "value": {"micro_batch_size": 64}}},
    },
    # the real model (`rlhf models prepare smollm2` first): 8 prompts x 4 samples x 128 new tokens
    "smollm2": {"smollm2": {
        "model": {"policy": "~/.cache/rlhf/smollm2-135m-instruct"},
        "data": {"apply_chat_template": True, "max_prompt_length": 64},
        "rollout": {"prompts_per_step": 8, "n_samples_per_prompt": 4, "max_new_tokens": 128},
        "ppo": {"num_minibatches": 2},
        "precision": {"cpu_matmul": "bf16"},
        "deepspeed": {"policy": {"micro_batch_size": 8}, "value": {"micro_batch_size": 8},
                      "frozen_micro_batch_size": 8},
    }},
}


@contextlib.contextmanager
def bench_config(cfg, workload: dict, steps: int, explicit_overrides: list[str] | None):
    """The config of one measured run of `workload`; its run directory is a scratch folder, removed when the block
    ends (the bench reads what it reports from the run before that: metrics, peak memory, threads)."""
    from rlhf.config import build_config, merge_trees, parse_overrides

    tree = merge_trees(merge_trees(cfg.model_dump(mode="json"), workload), _NO_FILES)
    tree = merge_trees(tree, parse_overrides(explicit_overrides or []))
    tree["checkpoint"].update(every=0, save_at_end=False)   # a benchmark measures steps, not checkpoint I/O
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-", ignore_cleanup_errors=True) as scratch:
        tree["run"].update(num_steps=steps + 1, output_dir=scratch, name="bench")
        yield build_config(tree, "bench")


def medians(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k.startswith(("time/", "throughput/"))]
    return {key: statistics.median(row[key] for row in rows if key in row) for key in keys}


def run_distributed(cfg) -> tuple[list[dict], dict, dict]:
    """The workload on the actors: the metrics of every step, peak memory per actor, and the threads each actor ran
    per phase ((role, rank) -> {phase: threads}; empty when every actor ran its num_cpus)."""
    trainer = PPOTrainer(cfg)
    trainer.run()
    return read_metrics(trainer.run_dir), trainer.peak_memory, trainer.phase_threads


def run_floor(cfg, threads: int) -> list[dict]:
    """The same steps in this process (`rlhf/floor.py`) with `threads` torch threads: the metrics of every step."""
    from rlhf.floor import FloorPPO

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        paths = role_paths(cfg)
        floor = FloorPPO(cfg, paths, load_prompts(cfg, load_tokenizer(paths["policy"])).ids)
        rows = []
        for step in range(1, cfg.run.num_steps + 1):
            exp, stats = floor.step(step)
            rows.append({"step": step, **stats, **throughput(exp, stats)})
        return rows
    finally:
        torch.set_num_threads(previous)


def role_params(cfg) -> dict:
    """role -> `matmul_params` of its model (the rollout's is the policy's; a reward function has none)."""
    return {role: matmul_params(meta_model(source.name, source.scalar_head, cfg.model.tiny, source.key))
            for role, source in model_sources(cfg, "ppo").items() if role != "rollout"}


def reserved_cpus(cfg) -> int:
    """CPUs the run's actors reserve in all (the floor gets as many threads, at most the machine's)."""
    cpus, _ = resources_needed(cfg)
    return max(1, min(int(cpus), os.cpu_count() or 1))


def peak_shares(report: dict, params: dict, epochs: int, peak_gflops: float, overlapped=()) -> dict:
    """Each phase's achieved FLOP/s as a share of the matmul peak (real tokens only); none for `overlapped`
    phases (async generation: its logged time is only the wait for it)."""
    tokens = report["throughput/tokens_per_s"] * report["time/step"]
    flops = phase_flops(tokens, params, epochs)
    return {f"peak_share/{phase}": flops[phase] / report[f"time/{phase}"] / (peak_gflops * 1e9)
            for phase in flops if report.get(f"time/{phase}") and phase not in overlapped}


def run_bench(cfg, steps: int = 4, explicit_overrides: list[str] | None = None, workload: str = "default",
              floor: bool = False, rounds: int = 1) -> dict:
    """Every variant of `workload`, printed; returns variant -> {'distributed': (report, rows), 'floor': (report,
    rows) with `floor`} of its last round, and with `floor` 'ratios' (one per round): a report holds the medians of
    the steps after the first (warm-up), rows every step. `rounds` > 1 runs each variant that many times, the
    distributed run and the floor in turns, and its ratio line gives the median over the rounds: on a VM whose speed
    drifts by tens of percent within a minute, the two sides of one round saw the same machine."""
    name = lambda variant: workload if variant == workload else f"{workload}/{variant}"
    results = {}
    for variant, tree in WORKLOADS[workload].items():
        ratios = []
        for round_ in range(1, rounds + 1):
            with bench_config(cfg, tree, steps, explicit_overrides) as vcfg:      # a run directory of its own
                sides = bench_round(vcfg, name(variant) + (f" round {round_}/{rounds}" if rounds > 1 else ""), steps,
                                    floor)
            if floor:
                ratios.append(sides["distributed"][0]["throughput/samples_per_s"]
                              / sides["floor"][0]["throughput/samples_per_s"])
        results[variant] = {**sides, "ratios": ratios}
    for variant, result in results.items():
        if floor:
            per_round = result["ratios"]
            spread = f"; median of {rounds} rounds: " + " ".join(f"{r:.2f}" for r in per_round) if rounds > 1 else ""
            print(f"ratio distributed/floor: {statistics.median(per_round):.2f} ({name(variant)}{spread})")
    return results


def bench_round(vcfg, name: str, steps: int, floor: bool) -> dict:
    """One run of a variant on the actors (and the floor after it), printed; side -> (report, rows)."""
    rows, memory, phase_threads = run_distributed(vcfg)
    threads = reserved_cpus(vcfg)
    runs = {"distributed": rows}
    if floor:
        runs["floor"] = run_floor(vcfg, threads)
    reports = {side: medians(rows[1:]) for side, rows in runs.items()}
    device = default_device()
    apply_cpu_matmul(vcfg.precision.cpu_matmul, device)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    peak = matmul_peak_gflops(device, torch_dtype(vcfg.precision.dtype, device))
    torch.set_num_threads(previous)
    params = role_params(vcfg)
    for side, report in reports.items():
        overlapped = ("generate",) if side == "distributed" and vcfg.rollout.async_ else ()
        report.update(peak_shares(report, params, vcfg.ppo.ppo_epochs, peak, overlapped))
    print_report(name, vcfg, steps, reports, memory, peak, threads, phase_threads)
    return {side: (reports[side], runs[side]) for side in runs}


def print_report(name, cfg, steps, reports, memory, peak, threads, phase_threads) -> None:
    tiny = f" {cfg.model.tiny.num_layers}x{cfg.model.tiny.hidden_size}" if cfg.model.policy == "tiny" else ""
    print(f"rlhf bench {name}: {steps} measured steps (after 1 warm-up), medians; {cfg.rollout_batch_size} samples "
          f"({cfg.rollout.prompts_per_step} prompts x {cfg.rollout.n_samples_per_prompt}) x "
          f"{cfg.rollout.max_new_tokens} new tokens, {cfg.ppo.advantage_estimator}"
          f"{', rollout.async' if cfg.rollout.async_ else ''}, policy {cfg.model.policy}{tiny}, "
          f"dtype {cfg.precision.dtype}, cpu_matmul {cfg.precision.cpu_matmul}")
    columns = list(reports)
    keys = sorted({k for r in reports.values() for k in r}, key=lambda k: (k.split("/")[0], k))
    print(f"  {'':40s}" + "".join(f"{c:>14s}" for c in columns))
    for key in keys:
        cells = [reports[c].get(key) for c in columns]
        print(f"  {key:40s}" + "".join(f"{v:14.3f}" if v is not None else f"{'-':>14s}" for v in cells))
    print(f"  matmul peak {peak:.0f} GFLOP/s with {threads} thread(s) (the floor's threads)")
    if phase_threads:
        print("  threads per phase (while the phase's actors on a node all work; then the others take the cores of one "
              "that is done): " + "; ".join(
            f"{role}[{rank}] " + " ".join(f"{phase} {n}" for phase, n in phases.items())
            for (role, rank), phases in sorted(phase_threads.items())))
    print("  peak memory per actor (MB):")
    for actor, stats in memory.items():
        print(f"    {actor:16s} " + "  ".join(f"{k} {v:8.0f}" for k, v in stats.items()))
