"""`rlhf bench --scaling`: a workload of `rlhf bench` over a grid of rollout and policy actor counts (value actors
follow the policy's), one distributed run per cell: a table of samples/s with the per-phase times that explain
it, and a PNG of samples/s against the rollout actor count, one line per policy actor count."""
from __future__ import annotations

from pathlib import Path

from .bench import WORKLOADS, bench_config, medians, run_distributed

PHASES = ("generate", "score", "train", "weight_sync", "step")


def run_scaling(cfg, counts: list[int], steps: int = 3, explicit_overrides: list[str] | None = None,
                workload: str = "default") -> list[dict]:
    variant, tree = next(iter(WORKLOADS[workload].items()))
    rows = []
    for policy in counts:
        for rollout in counts:
            cell = [*(explicit_overrides or []), "--actors.rollout.num_actors", str(rollout),
                    "--actors.policy.num_actors", str(policy), "--actors.value.num_actors", str(policy)]
            with bench_config(cfg, tree, steps, cell) as cell_cfg:
                metrics, _, _ = run_distributed(cell_cfg)
            rows.append({"rollout": rollout, "policy": policy, **medians(metrics[1:])})
    print(f"rlhf bench --scaling ({workload}): {steps} measured steps per cell (after 1 warm-up), medians")
    print(f"  {'rollout':>7s} {'policy':>6s} {'samples/s':>10s} " + " ".join(f"{p:>11s}" for p in PHASES))
    for row in rows:
        print(f"  {row['rollout']:7d} {row['policy']:6d} {row['throughput/samples_per_s']:10.2f} "
              + " ".join(f"{row.get('time/' + p, 0.0):11.3f}" for p in PHASES))
    folder = Path(cfg.run.output_dir).expanduser() / "bench-scaling"
    folder.mkdir(parents=True, exist_ok=True)
    plot(rows, counts, folder / f"samples_per_s_{workload}.png")
    print(f"done: {folder / f'samples_per_s_{workload}.png'}")
    return rows


def plot(rows: list[dict], counts: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in counts:
        mine = [r for r in rows if r["policy"] == policy]
        ax.plot([r["rollout"] for r in mine], [r["throughput/samples_per_s"] for r in mine], marker="o",
                label=f"{policy} policy (and value) actor(s)")
    ax.set_xlabel("rollout actors")
    ax.set_ylabel("samples/s")
    ax.set_xticks(counts)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
