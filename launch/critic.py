"""The CriticGPT stages (`rlhf critic <stage>`), each a step of the story, outputs feeding the next, all in one run
directory (default runs/critic-default); a finished stage is not run again (`stage_done.json`, as the pipeline):

  tamper   bugs inserted into working code, each checked in the sandbox and described as a reviewer would;
           a train / validation / test dataset split by problem                       -> <run>/tampers/
  sft      the critic learns to write the gold critiques (the reference, in the critique format)
                                                                                        -> <run>/sft/best_hf
  rm       the SFT critic samples critiques of each training answer; with the gold one they are ranked by their
           automatic labels; the critique reward model learns the rankings (K-wise loss) -> <run>/rm/final_hf
  ppo      PPO of the SFT critic against the critique reward model, KL to the SFT critic -> <run>/ppo/policy_hf
  eval     the critics on the test split under each decoding (`launch/critic_eval.py`)  -> <run>/eval/
  pipeline all of them in order
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from actors.evaluator import PolicyEvaluator
from rlhf.config import for_stage
from rlhf.critic.data import (fake_problem_critiques, missed_by_some, ranking_row, sft_rows, swapped_quote_critiques,
                              tamper_prompt, write_jsonl)
from rlhf.critic.dataset import load_tampers, save_tampers
from rlhf.critic.problems import load_problems
from rlhf.critic.tamper import TamperSettings, tamper_problems
from rlhf.models import resolve_model_path
from rlhf.seeding import derive_seed
from rlhf.sandbox import SandboxLimits, isolation

from .critic_eval import run_critic_eval
from .pipeline import run_stage, stage_config
from .ppo import run_ppo
from .ray_session import ray_session
from .rm import run_rm
from .sft import run_sft


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


def training_tampers(root: Path) -> list[dict]:
    """The tampers the critic learns from: the train split and the validation split (the SFT and RM stages hold
    out their own validation rows); the test split is kept for `rlhf critic eval`."""
    dataset = load_tampers(root / "tampers")
    return list(dataset["train"]) + list(dataset["validation"])


def stage_configs(cfg, root: Path) -> dict:
    """The configs the sft, rm and ppo stages run with (their data written by the stages themselves), each checked
    by its stage's rules: `rlhf critic pipeline` checks all of them before the first stage starts."""
    data, sft_model, reward_model = root / "data", str(root / "sft" / "best_hf"), str(root / "rm" / "final_hf")
    configs = {
        "sft": stage_config(cfg, root, "sft", sft={"data": str(data / "sft.jsonl")}),
        "rm": stage_config(cfg, root, "rm", rm={"data": str(data / "rm.jsonl"), "base": sft_model,
                                                "reference_data": str(data / "sft.jsonl")}),
        "ppo": stage_config(cfg, root, "ppo", model={"policy": sft_model, "reference": sft_model, "value": None},
                            reward={"function": None, "model": reward_model}, ppo={"init_value_from_reward": True},
                            data={"prompts": str(data / "prompts.jsonl"), "input_key": "prompt"}),
    }
    return {stage: for_stage(stage_cfg, stage) for stage, stage_cfg in configs.items()}


def run_critic_sft(cfg) -> Path:
    cfg = for_stage(cfg, "critic")
    root = cfg.run_dir
    stage_cfg = stage_configs(cfg, root)["sft"]
    write_jsonl(sft_rows(training_tampers(root), cfg.critic.sft.second_comments, cfg.run.seed),
                Path(stage_cfg.sft.data))
    with ray_session(cfg):
        run_stage("sft", stage_cfg, run_sft, root, resume=True)
    return root / "sft" / "best_hf"


def run_critic_rm(cfg) -> Path:
    cfg = for_stage(cfg, "critic")
    root, section = cfg.run_dir, cfg.critic.rm
    stage_cfg = stage_configs(cfg, root)["rm"]
    with ray_session(cfg):
        if not (root / "rm" / "stage_done.json").exists():
            tampers = training_tampers(root)
            samples = sample_critiques(cfg, stage_cfg.rm.base, [tamper_prompt(t) for t in tampers], section.samples)
            counts, rows = Counter(tampers=len(tampers)), []
            for index, (tamper, sampled) in enumerate(zip(tampers, samples)):
                if section.adversarial and not missed_by_some(tamper, sampled):
                    counts["dropped: the critic caught the bug in every sample"] += 1
                    continue
                seed = derive_seed(cfg.run.seed, "fake_critique", index)
                fakes = fake_problem_critiques(tamper, section.fake_problems, seed)
                counts["fake-problem critiques"] += len(fakes)
                quoted = fake_problem_critiques(tamper, section.hallucinated_fakes, seed, hallucinated=True)
                counts["hallucinated fake critiques"] += len(quoted)
                fakes += quoted
                swapped = swapped_quote_critiques(tamper, sampled, section.swapped_quotes, seed)
                counts["swapped-quote critiques"] += len(swapped)
                fakes += swapped
                row = ranking_row(tamper, sampled, fakes)
                counts["rankings" if row else "dropped: fewer than two distinct critiques"] += 1
                if row:
                    rows.append(row)
            write_jsonl(rows, Path(stage_cfg.rm.data))
            print("rm data: " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
        run_stage("rm", stage_cfg, run_rm, root, resume=True)
    return root / "rm" / "final_hf"


def run_critic_ppo(cfg) -> Path:
    cfg = for_stage(cfg, "critic")
    root = cfg.run_dir
    stage_cfg = stage_configs(cfg, root)["ppo"]
    write_jsonl([{"prompt": tamper_prompt(t)} for t in training_tampers(root)], Path(stage_cfg.data.prompts))
    with ray_session(cfg):
        run_stage("ppo", stage_cfg, run_ppo, root, resume=True)
    return root / "ppo" / "policy_hf"


def run_critic_pipeline(cfg) -> dict:
    """Every stage in order, on one Ray cluster; a stage finished by an earlier (stopped) pipeline is skipped, a
    stopped one resumes from its last checkpoint. Every stage's config is checked before the first starts."""
    cfg = for_stage(cfg, "critic")
    stage_configs(cfg, cfg.run_dir)
    run_critic_tamper(cfg)
    with ray_session(cfg):
        run_critic_sft(cfg)
        run_critic_rm(cfg)
        run_critic_ppo(cfg)
        return run_critic_eval(cfg)


def sample_critiques(cfg, model: str, prompts: list[str], n: int) -> list[list[str]]:
    """`n` critiques of each prompt sampled from `model` on one rollout actor (rollout settings of `cfg`)."""
    path = resolve_model_path(model, cfg.model.cache_dir, cfg.model.tiny, "critic model")
    sampler = PolicyEvaluator(cfg, path, path, scores=False)
    try:
        return sampler.complete(prompts, n, step=0)
    finally:
        sampler.shutdown()


CRITIC_STAGES = {
    "tamper": ("insert checked bugs into working code with reference descriptions", run_critic_tamper),
    "sft": ("train the critic on gold critiques", run_critic_sft),
    "rm": ("rank sampled + gold critiques by their labels and train the critique reward model", run_critic_rm),
    "ppo": ("PPO of the critic against the critique reward model", run_critic_ppo),
    "eval": ("the critics on held-out tampers: CBI, hallucinations, Elo, per decoding (--fsbs adds FSBS)",
             run_critic_eval),
    "pipeline": ("tamper, sft, rm, ppo and eval in order, resumable by stage", run_critic_pipeline),
}
