"""`rlhf bench --async-curve`: the same PPO run (the bundled toy task unless a config says otherwise) twice,
synchronous and with `rollout.async`, and the ground-truth reward of every step of both in one PNG, with the time
each took: asynchronous generation learns like synchronous (one step off-policy) in less time. Both runs stay
beside the PNG (`<run.output_dir>/bench-async/sync` and `async`: metrics, samples, wandb as configured); a new
curve replaces them."""
from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

from .ppo import run_ppo
from .runlog import read_metrics


def run_async_curve(cfg) -> Path:
    from rlhf.config import build_config

    folder = Path(cfg.run.output_dir).expanduser() / "bench-async"
    curves, seconds = {}, {}
    for mode in ("sync", "async"):
        shutil.rmtree(folder / mode, ignore_errors=True)        # the previous curve's run of this mode
        tree = cfg.model_dump(mode="json")
        tree["rollout"]["async"] = mode == "async"
        tree["run"].update(output_dir=str(folder), name=mode)
        tree["checkpoint"].update(every=0, save_at_end=False, export_hf=False)
        tree["logging"].update(progress_bar=False)
        start = time.perf_counter()
        rows = read_metrics(run_ppo(build_config(tree, "bench")))
        seconds[mode] = time.perf_counter() - start
        curves[mode] = [row["reward/score_mean"] for row in rows]
    path = folder / "reward_sync_vs_async.png"
    plot(curves, seconds, path)
    print("rlhf bench --async-curve: reward/score_mean (the task's reward function) per step")
    for mode, rewards in curves.items():
        print(f"  {mode:6s} steps {len(rewards)}  first 5 {statistics.mean(rewards[:5]):.3f}  last 5 "
              f"{statistics.mean(rewards[-5:]):.3f}  run {seconds[mode]:.1f} s")
    print(f"  speed-up async/sync (whole run, actor start-up included): {seconds['sync'] / seconds['async']:.2f}")
    print(f"done: {path}")
    return path


def plot(curves: dict, seconds: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, rewards in curves.items():
        ax.plot(range(1, len(rewards) + 1), rewards, label=f"{mode} ({seconds[mode]:.0f} s)")
    ax.set_xlabel("PPO step")
    ax.set_ylabel("reward (ground truth)")
    ax.set_title("rollout.async: generation overlapped with training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
