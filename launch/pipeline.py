"""The InstructGPT pipeline (`rlhf pipeline`), each stage on its own actors, outputs feeding the next:

  1. SFT on demonstrations                                  -> <run>/sft/best_hf (chosen by validation)
  2. reward model on rankings, initialised from the SFT model -> <run>/rm/final_hf (bias-normalized)
  3. PPO: policy and reference = the SFT model, reward = the RM, value initialised from the RM -> <run>/ppo/policy_hf
  4. a table: hidden ground-truth score of the base, SFT and PPO policies, RM held-out accuracy, KL(PPO || SFT)

A finished stage leaves `stage_done.json`; a stopped pipeline resumes at the stage (and step) where it stopped.
"""
from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from actors.evaluator import PolicyEvaluator
from rlhf.checkpoint import CheckpointManager
from rlhf.config import for_stage
from rlhf.data.prompts import left_pad, load_prompt_texts, tokenize_prompts
from rlhf.models import load_tokenizer, resolve_model_path
from rlhf.reward_function import probe_reward_function

from .ppo import run_ppo
from .ray_session import ray_session
from .rm import run_rm
from .runlog import cleaned_up_if_never_started, prepare_run_dir, read_metrics
from .sft import run_sft


def stage_config(cfg, root: Path, stage: str, **sections):
    """The pipeline's config with the stage's run directory and wandb group, and section overrides."""
    update = {"run": cfg.run.model_copy(update={"output_dir": str(root), "name": stage}),
              "logging": cfg.logging.model_copy(update={"wandb_group": cfg.logging.wandb_group or cfg.run.name})}
    for name, changes in sections.items():
        update[name] = getattr(cfg, name).model_copy(update=changes)
    merged = cfg.model_copy(update=update)
    return type(cfg).model_validate(merged.model_dump())


def run_stage(name: str, stage_cfg, runner, root: Path, resume: bool) -> None:
    stage_dir = root / name
    if (stage_dir / "stage_done.json").exists():
        print(f"pipeline: stage {name} already done, skipping")
        return
    can_resume = CheckpointManager(stage_dir, 1).latest() is not None
    if stage_dir.exists() and not can_resume:
        shutil.rmtree(stage_dir)   # stopped before its first checkpoint: start the stage over
    runner(stage_cfg, resume=resume and can_resume)
    (stage_dir / "stage_done.json").write_text(json.dumps({"stage": name}))


def stage_configs(cfg, root: Path) -> dict:
    """The three stages' configs as they will run, each checked by its stage's rules before the first starts."""
    sft_model, reward_model = str(root / "sft" / "best_hf"), str(root / "rm" / "final_hf")
    configs = {
        "sft": stage_config(cfg, root, "sft"),
        "rm": stage_config(cfg, root, "rm", rm={"base": sft_model}),
        "ppo": stage_config(cfg, root, "ppo", model={"policy": sft_model, "reference": sft_model, "value": None},
                            reward={"function": None, "model": reward_model}, ppo={"init_value_from_reward": True}),
    }
    return {stage: for_stage(stage_cfg, stage) for stage, stage_cfg in configs.items()}


def run_pipeline(cfg, resume: bool = False) -> dict:
    cfg = for_stage(cfg, "pipeline")
    root = prepare_run_dir(cfg, resume, lambda: cfg.run_dir.exists())
    configs = stage_configs(cfg, root)
    resolve_model_path(cfg.model.policy, cfg.model.cache_dir, cfg.model.tiny, "model.policy")
    if cfg.pipeline.ground_truth is not None:
        texts, _ = load_prompt_texts(cfg.pipeline.eval_prompts, cfg.data.input_key, key="pipeline.eval_prompts")
        probe_reward_function(cfg.pipeline.ground_truth, texts[:4], texts[:4])
    with cleaned_up_if_never_started(root), ray_session(cfg):
        root.mkdir(parents=True, exist_ok=True)
        # 1. SFT on demonstrations                                  -> sft/best_hf
        run_stage("sft", configs["sft"], run_sft, root, resume)
        # 2. reward model on rankings, from the SFT model          -> rm/final_hf
        run_stage("rm", configs["rm"], run_rm, root, resume)
        # 3. PPO against the reward model, KL to the SFT model, value initialised from the reward model
        run_stage("ppo", configs["ppo"], run_ppo, root, resume)
        # 4. the table
        report = evaluate(cfg, root, str(root / "sft" / "best_hf"))
    (root / "report.json").write_text(json.dumps(report, indent=1))
    print(format_report(report))
    return report


def evaluate(cfg, root: Path, sft_model: str) -> dict:
    """Ground truth of base, SFT and PPO policies on held-out prompts, RM held-out accuracy, KL(PPO || SFT)."""
    rm_rows = [r for r in read_metrics(root / "rm") if "rm/val_accuracy" in r]
    ppo_rows = read_metrics(root / "ppo")
    report = {"rm_heldout_accuracy": rm_rows[-1]["rm/val_accuracy"],
              "kl_ppo_to_sft": statistics.mean(r["kl/sequence_mean"] for r in ppo_rows[-5:]),
              "ppo_reward_model_score_first": ppo_rows[0]["reward/score_mean"],
              "ppo_reward_model_score_last": statistics.mean(r["reward/score_mean"] for r in ppo_rows[-5:])}
    if cfg.pipeline.ground_truth is None:
        return report
    base = resolve_model_path(cfg.model.policy, cfg.model.cache_dir, cfg.model.tiny)
    tokenizer = load_tokenizer(sft_model)
    texts, source = load_prompt_texts(cfg.pipeline.eval_prompts, cfg.data.input_key, key="pipeline.eval_prompts")
    _, ids = tokenize_prompts(texts[:cfg.pipeline.eval_samples], tokenizer, cfg.data.max_prompt_length, source,
                              cfg.data.apply_chat_template)
    prompt_ids, prompt_mask = left_pad(ids, tokenizer.pad_token_id)
    judge = cfg.model_copy(update={"reward": cfg.reward.model_copy(update={"function": cfg.pipeline.ground_truth,
                                                                           "model": None})})
    evaluator = PolicyEvaluator(judge, base, sft_model)
    try:
        for name, path in (("base", base), ("sft", sft_model), ("ppo", str(root / "ppo" / "policy_hf"))):
            evaluator.load_path(path)
            report[f"ground_truth_{name}"], _ = evaluator.mean_score(prompt_ids, prompt_mask, step=0)
    finally:
        evaluator.shutdown()
    return report


def format_report(report: dict) -> str:
    rows = [("ground truth, base policy", report.get("ground_truth_base")),
            ("ground truth, SFT policy", report.get("ground_truth_sft")),
            ("ground truth, PPO policy", report.get("ground_truth_ppo")),
            ("reward model held-out accuracy", report["rm_heldout_accuracy"]),
            ("KL(PPO || SFT) per sequence", report["kl_ppo_to_sft"]),
            ("RM score during PPO, first -> last", f"{report['ppo_reward_model_score_first']:.3f} -> "
                                                   f"{report['ppo_reward_model_score_last']:.3f}")]
    width = max(len(name) for name, _ in rows)
    lines = ["", "pipeline result", "-" * (width + 14)]
    for name, value in rows:
        if value is not None:
            lines.append(f"{name:{width}s}  {value:>10.3f}" if isinstance(value, float) else f"{name:{width}s}  {value}")
    return "\n".join(lines)
