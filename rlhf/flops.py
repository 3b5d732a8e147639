"""What a PPO step did and how fast: its throughput (as `rlhf ppo` logs it), the work of its phases in FLOPs and
the machine's matrix-multiply peak, so `rlhf bench` can say what share of the peak each phase reaches. A forward
pass costs 2 FLOPs per matmul parameter per token, a training pass (forward + backward) 6 (Kaplan et al. 2020);
attention's own matmuls are left out (small at these lengths), and only real tokens count: work spent on padding
shows as a lower share, as it should."""
from __future__ import annotations

import time

import torch


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters a token's forward multiplies by: all but the input embedding (a lookup); a tied output
    embedding (the LM head) counts once."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = head is not None and head.weight is embedding
    return total - embedding.numel() + (embedding.numel() if tied else 0)


def throughput(exp, timings: dict, real_tokens: int | None = None) -> dict:
    """samples/s and real (prompt + response) tokens/s of a step, generated tokens/s of its generation phase.
    `real_tokens`: given where `exp` holds no token ids (the driver's view), else counted from its attention mask."""
    tokens = exp.attention_mask.sum().item() if real_tokens is None else real_tokens
    return {"throughput/samples_per_s": len(exp) / timings["time/step"],
            "throughput/tokens_per_s": tokens / timings["time/step"],
            "throughput/generated_tokens_per_s": exp.response_mask.sum().item() / timings["time/generate"]}


def phase_flops(tokens: float, params: dict[str, int], ppo_epochs: int) -> dict[str, float]:
    """FLOPs of each phase of a step over `tokens` real tokens (prompts and responses: generation runs the
    prompt once and each generated token once); `params`: role -> `matmul_params` of its model (policy,
    reference, and value / reward when they are models)."""
    scored = sum(params.values())                       # old log-probs, reference, value, reward model
    trained = params["policy"] + params.get("value", 0)
    return {"generate": 2.0 * params["policy"] * tokens,
            "score": 2.0 * scored * tokens,
            "train": 6.0 * trained * tokens * ppo_epochs}


def matmul_peak_gflops(device: torch.device | None = None, dtype: torch.dtype = torch.float32, size: int = 1024,
                       repeats: int = 5) -> float:
    """The best of `repeats` square matmuls of `size` in `dtype` on `device`, in GFLOP/s, with this process's
    threads and matmul settings (on CPU `precision.cpu_matmul: bf16` runs fp32 matmuls through bf16 kernels)."""
    device = device or torch.device("cpu")
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
