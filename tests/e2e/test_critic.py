"""The CriticGPT chain end to end on the toy code task and a tiny model, on the session's Ray cluster: tamper ->
critic SFT on gold critiques -> critique RM on sampled + gold critiques ranked by their labels -> PPO of the critic
against it -> evaluation of both critics under sampling, best-of-n and FSBS. Small budgets: this checks the stages connect and what each writes, not that the critic learns."""
import json

import pytest

from launch.critic import run_critic_pipeline, run_critic_ppo, run_critic_rm, run_critic_sft, run_critic_tamper
from launch.critic_eval import run_critic_eval
from launch.runlog import read_metrics
from rlhf.config import ConfigError, build_config, bundled_default
from rlhf.critic.critique import label_critique
from rlhf.critic.dataset import load_tampers

pytestmark = pytest.mark.slow


def critic_config(tmp_path, model_cache):
    tree = bundled_default("critic")
    tree["run"].update(output_dir=str(tmp_path), num_steps=2)
    tree["model"]["cache_dir"] = model_cache
    tree["critic"] = {"tamper": {"problems": "toy:24", "max_attempts": 2}, "rm": {"samples": 2},
                      "eval": {"best_of": 2, "fsbs": True, "fsbs_n": 2, "fsbs_k": 1, "fsbs_rounds": 2, "limit": 3,
                               "fsbs_critics": ["rl"], "fsbs_limit": 2}}
    tree["sft"].update(epochs=1, eval_every=100)
    tree["rm"].update(epochs=1, eval_every=100, batch_size=8, micro_batch_size=8)
    tree["rollout"].update(max_new_tokens=24, prompts_per_step=4)
    tree["deepspeed"] = {"policy": {"micro_batch_size": 4}, "value": {"micro_batch_size": 4}}
    tree["checkpoint"] = {"every": 0}
    tree["logging"] = {"wandb_mode": "disabled", "progress_bar": False}
    return build_config(tree, "test")


def test_critic_chain_tamper_sft_rm_ppo(ray_cluster, tmp_path, model_cache):
    cfg = critic_config(tmp_path, model_cache)
    root = tmp_path / "critic-default"
    tampers = load_tampers(run_critic_tamper(cfg))
    assert sum(len(tampers[s]) for s in ("train", "validation", "test")) == 24          # one per toy problem
    assert (run_critic_sft(cfg) / "config.json").exists()
    sft_rows = [json.loads(line) for line in (root / "data" / "sft.jsonl").read_text().splitlines()]
    assert len(sft_rows) == len(tampers["train"]) + len(tampers["validation"])
    assert sft_rows[0]["response"].startswith("```python\n") and sft_rows[0]["prompt"].endswith("Critique:\n")

    assert (run_critic_rm(cfg) / "config.json").exists()
    rankings = [json.loads(line) for line in (root / "data" / "rm.jsonl").read_text().splitlines()]
    by_prompt = {row["prompt"]: row for row in rankings}
    # 2 sampled, gold, 1 fake problem, 1 hallucinated fake (last: its quote is not in the answer)
    assert rankings and all(len(r["responses"]) == len(r["ranks"]) <= 5 for r in rankings)
    for tamper in tampers["train"]:
        row = by_prompt.get(f"Find the bug. Quote it in a ```python block, then explain.\n```python\n"
                            f"{tamper['tampered']}```\nCritique:\n")
        if row is None:
            continue
        gold = row["responses"][0]            # the gold critique catches the bug: nothing ranks above it
        assert label_critique(gold, tamper["tampered"], tamper["changed_lines"]).catches_bug
        assert row["ranks"][0] == 1
        invented = label_critique(row["responses"][-1], tamper["tampered"], tamper["changed_lines"])
        assert invented.hallucinated == 1 and row["ranks"][-1] == max(row["ranks"])

    policy = run_critic_ppo(cfg)
    assert (policy / "config.json").exists()
    assert [row["step"] for row in read_metrics(root / "ppo")] == [1, 2]
    # eval: both critics under sampling and best-of-2 on 3 answers, the RL critic with FSBS at four percentiles on
    # the first 2; labelled, Elo, a plot
    report = run_critic_eval(cfg)
    fsbs_names = {f"rl/fsbs_{p}" for p in ("p10", "p25", "p50", "p75")}
    names = {f"{c}/{d}" for c in ("sft", "rl") for d in ("sample", "best_of_n")} | fsbs_names
    assert report["answers"] == 3 and set(report["rows"]) == names
    for name, row in report["rows"].items():
        assert 0 <= row["cbi_rate"] <= 1 and 0 <= row["hallucinated_rate"] <= 1 and row["mean_length"] > 0
        assert row["answers"] == (2 if name in fsbs_names else 3)
    assert sum(row["elo"] for row in report["rows"].values()) == pytest.approx(1000 * len(names))
    critiques = [json.loads(line) for line in (root / "eval" / "critiques.jsonl").read_text().splitlines()]
    assert len(critiques) == 3 * 4 + 2 * 4
    fsbs = [c["critique"] for c in critiques if c["decoding"].startswith("fsbs")]
    assert all(text.startswith("```python\n") for text in fsbs)          # the forced highlight opener
    assert (root / "eval" / "precision_recall.png").stat().st_size > 10_000
    metrics = read_metrics(root / "eval")
    assert metrics[0]["critic_eval/rl/sample/cbi_rate"] == report["rows"]["rl/sample"]["cbi_rate"]
    # finished stages are not run again
    assert run_critic_sft(cfg) == root / "sft" / "best_hf"
    assert json.loads((root / "ppo" / "stage_done.json").read_text()) == {"stage": "ppo"}


def test_critic_pipeline_checks_every_stage_before_the_first(tmp_path, model_cache):
    cfg = critic_config(tmp_path, model_cache).model_copy(deep=True)
    tree = cfg.model_dump()
    tree["deepspeed"]["policy"]["micro_batch_size"] = 3               # PPO's minibatch of 4 does not divide by 3
    with pytest.raises(ConfigError, match=r"config error for rlhf ppo: deepspeed.policy.micro_batch_size"):
        run_critic_pipeline(build_config(tree, "test"))
    assert not (tmp_path / "critic-default" / "tampers").exists()      # refused before tampering began
