"""`rlhf bench --memory`: peak memory per rank of the config's policy, built and trained for one step, over a grid
of ZeRO stages x rank counts. Each cell starts fresh policy actors, builds the model (partitioned from the start
under ZeRO-3), and runs one PPO optimizer step on a fixed random batch of one micro-batch per rank (prompt
`data.max_prompt_length` + response `rollout.max_new_tokens` tokens), so the activations per rank are the same in
every cell and the table shows how the model's share divides over ranks; beside it, the part of it that is weights,
gradients and optimizer state as `rlhf/memory_plan.py` estimates it (the rest: activations and DeepSpeed's buffers)."""
from __future__ import annotations

import torch

from actors.group import RoleGroups, RoleSpec
from actors.policy import PolicyWorker
from rlhf.config import build_config, engine_settings, for_stage, merge_trees
from rlhf.experience import Experience
from rlhf.memory_plan import count_parameters, dtype_bytes, trainable_memory
from rlhf.models import load_tokenizer, resolve_model_path
from rlhf.seeding import derive_seed

from .ray_session import ray_session


def cell_config(cfg, stage: int, ranks: int):
    """The config of one cell: `ranks` policy actors under ZeRO `stage`, one PPO minibatch of one micro-batch per
    rank (the config's micro-batch size)."""
    micro = cfg.deepspeed.policy.micro_batch_size
    cell = {"actors": {"policy": {"num_actors": ranks}}, "deepspeed": {"policy": {"zero_stage": stage}},
            "rollout": {"prompts_per_step": ranks * micro, "n_samples_per_prompt": 1},
            "ppo": {"num_minibatches": 1, "advantage_estimator": "reinforce++"}}   # no critic to size
    return for_stage(build_config(merge_trees(cfg.model_dump(mode="json"), cell), "bench --memory"), "ppo")


def random_batch(cfg, vocab_size: int, rows: int) -> Experience:
    """`rows` samples of random tokens with every position real, and random advantages: what one update costs in
    memory does not depend on what the tokens say."""
    generator = torch.Generator().manual_seed(derive_seed(cfg.run.seed, "benchmark"))
    prompt, response = cfg.data.max_prompt_length, cfg.rollout.max_new_tokens
    sequences = torch.randint(0, vocab_size, (rows, prompt + response), generator=generator)
    zeros = torch.zeros(rows, response)
    return Experience(sequences=sequences, attention_mask=torch.ones_like(sequences),
                      response_mask=torch.ones(rows, response), ends_with_eos=torch.zeros(rows, dtype=torch.bool),
                      prompt_index=torch.arange(rows), prompt_length=prompt, old_logprobs=zeros,
                      reference_logprobs=zeros, advantages=torch.randn(rows, response, generator=generator))


def measure_cell(cfg, path: str, vocab_size: int) -> list[dict]:
    """Peak memory of every policy rank after building the engine and one optimizer step."""
    rows = cfg.rollout_batch_size
    with RoleGroups(cfg, [RoleSpec("policy", PolicyWorker, (path,), distributed=True)]) as groups:
        groups["policy"].run_shards("train", random_batch(cfg, vocab_size, rows), {}, [torch.arange(rows)], 0.0)
        return groups["policy"].run("peak_memory_mb")


def run_memory_bench(cfg, stages: list[int], ranks: list[int]) -> list[dict]:
    cfg = for_stage(cfg, "ppo")
    path = resolve_model_path(cfg.model.policy, cfg.model.cache_dir, cfg.model.tiny, "model.policy")
    vocab_size = len(load_tokenizer(path))
    cells = [(stage, n, cell_config(cfg, stage, n)) for stage in stages for n in ranks]
    lora = engine_settings(cfg, "policy").lora          # with LoRA: only the adapters carry optimizer state
    params, trainable = count_parameters(cfg.model.policy, False, cfg.model.tiny, "model.policy", lora)
    element = dtype_bytes(cfg)
    table = []
    with ray_session(max((c for _, _, c in cells), key=lambda c: c.actors.policy.num_actors)):
        for stage, n, cell in cells:
            per_rank = measure_cell(cell, path, vocab_size)
            peak = max(r["host_peak_rss_mb"] for r in per_rank)
            before = max(r["host_rss_before_model_mb"] for r in per_rank)
            estimate = trainable_memory("policy", params, element, n, cell.deepspeed.policy, trainable)
            row = {"zero_stage": stage, "ranks": n, "host_peak_rss_mb": peak, "host_rss_before_model_mb": before,
                   "model_share_mb": peak - before,
                   "estimated_state_mb": estimate.total / 2**20}
            if "gpu_peak_allocated_mb" in per_rank[0]:
                row["gpu_peak_allocated_mb"] = max(r["gpu_peak_allocated_mb"] for r in per_rank)
            table.append(row)
            print(f"  ZeRO-{stage} x {n}: " + "  ".join(f"{k} {v:.0f}" for k, v in row.items()
                                                         if k not in ("zero_stage", "ranks")), flush=True)
    micro = cfg.deepspeed.policy.micro_batch_size
    print(f"rlhf bench --memory: {cfg.model.policy}, dtype {cfg.precision.dtype}, one PPO step on {micro} x "
          f"{cfg.data.max_prompt_length + cfg.rollout.max_new_tokens} tokens per rank; the largest rank of each cell, "
          "MB")
    gpu = "gpu_peak_allocated_mb" in table[0]
    print("| ZeRO | ranks | peak RSS per rank | RSS before the model | model's share per rank | of which state "
          "(estimate) |" + (" GPU peak allocated |" if gpu else ""))
    print("|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    for row in table:
        print(f"| {row['zero_stage']} | {row['ranks']} | {row['host_peak_rss_mb']:.0f} | "
              f"{row['host_rss_before_model_mb']:.0f} | {row['model_share_mb']:.0f} | {row['estimated_state_mb']:.0f} |"
              + (f" {row['gpu_peak_allocated_mb']:.0f} |" if gpu else ""))
    return table
