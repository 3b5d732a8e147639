"""The CriticGPT stages (`rlhf critic <stage>`), each a step of the story and resumable by stage: a stage whose
output folder in the run directory is complete is not run again.

  tamper   bugs inserted into working code (HumanEval), each checked in the sandbox and described as a reviewer
           would; saved as a train / validation / test dataset split by problem (`<run>/tampers/`)
"""
from __future__ import annotations

import json
from pathlib import Path

from rlhf.config import for_stage
from rlhf.critic.dataset import save_tampers
from rlhf.critic.problems import load_problems
from rlhf.critic.tamper import TamperSettings, tamper_problems
from rlhf.sandbox import SandboxLimits, isolation


def run_critic_tamper(cfg) -> Path:
    """Tamper the configured problems into `<run>/tampers/` (skipped when a complete one is there)."""
    cfg = for_stage(cfg, "critic")
    section = cfg.critic.tamper
    folder = cfg.run_dir / "tampers"
    if (folder / "summary.json").exists():
        print(f"tamper: {folder} is complete; not made again")
        return folder
    problems, skipped = load_problems(section.problems, section.limit)
    settings = TamperSettings(section.tampers_per_problem, section.max_attempts, cfg.run.seed,
                              SandboxLimits(timeout_s=section.timeout_s, memory_mb=section.memory_mb), section.workers)
    print(f"tamper: {len(problems)} problems, up to {section.max_attempts} edits each, checked in the sandbox "
          f"({isolation()})", flush=True)
    tampers, counts = tamper_problems(problems, settings)
    counts.update(skipped)
    summary = save_tampers(tampers, counts, folder, section.validation_fraction, section.test_fraction, cfg.run.seed)
    print(format_summary(summary))
    return folder


def format_summary(summary: dict) -> str:
    lines = [f"  {key}: {value}" for key, value in summary["counts"].items()]
    lines.append("  by operator: " + json.dumps(summary["operators"]))
    lines.append("  splits (tampers): " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    return "\n".join(lines)


CRITIC_STAGES = {"tamper": ("insert checked bugs into working code with reference descriptions", run_critic_tamper)}
