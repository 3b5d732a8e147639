"""`rlhf critic eval`: the critics of a run on the held-out test tampers, under each decoding:

  sample       one sampled critique
  best_of_n    the critique RM's pick of `critic.eval.best_of` samples
  fsbs_pXX     FSBS (with --fsbs), LENGTH_MODIFIER at the 10th / 25th / 50th / 75th percentile of each search's
               highlight counts; for `critic.eval.fsbs_critics`, on the first `critic.eval.fsbs_limit` answers

For each (critic, decoding): CBI rate (a highlight quotes the inserted bug), hallucinated-highlight rate, rate of
highlights on unchanged lines, mean highlights and length; Elo of every (critic, decoding) from pairwise
preferences judged by the critique RM on the same answers. Written to <run>/eval/ (report.json, a table,
precision_recall.png) and logged to wandb.
"""
from __future__ import annotations

import itertools
import json
import shutil
import statistics
from pathlib import Path

from actors.evaluator import PolicyEvaluator
from rlhf.config import for_stage
from rlhf.critic.critique import label_critique
from rlhf.critic.data import tamper_prompt
from rlhf.critic.dataset import TamperDataError, load_tampers
from rlhf.critic.elo import elo_scores
from rlhf.critic.fsbs import PERCENTILES, choose, search_many

from .ray_session import ray_session
from .runlog import RunLog


def run_critic_eval(cfg) -> dict:
    cfg = for_stage(cfg, "critic")
    root, section = cfg.run_dir, cfg.critic.eval
    tampers = list(load_tampers(root / "tampers")["test"])[:section.limit]
    critics = {name: root / folder for name, folder in (("sft", "sft/best_hf"), ("rl", "ppo/policy_hf"))
               if (root / folder / "config.json").exists()}
    reward_model = root / "rm" / "final_hf"
    if not tampers or not critics or not (reward_model / "config.json").exists():
        raise TamperDataError(f"{root}: critic eval needs test tampers, a critic (sft or ppo stage) and the critique "
                              f"RM (rm stage)")
    judge = cfg.model_copy(update={"reward": cfg.reward.model_copy(update={"function": None,
                                                                           "model": str(reward_model)})})
    prompts = [tamper_prompt(t) for t in tampers]
    critiques, scores = {}, {}
    with ray_session(cfg):
        for name, path in critics.items():
            evaluator = PolicyEvaluator(judge, str(path), str(path))
            try:
                critiques.update(decode_all(name, evaluator, prompts, section))
                for key in [k for k in critiques if k[0] == name]:
                    scores[key] = evaluator.score_texts(prompts, critiques[key])
            finally:
                evaluator.shutdown()
    report = summarize(tampers, critiques, scores)
    out = root / "eval"
    shutil.rmtree(out, ignore_errors=True)          # an evaluation replaces the previous one
    log_to_wandb(cfg, report)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "critiques.jsonl").write_text("".join(
        json.dumps({"critic": c, "decoding": d, "task_id": t["task_id"], "critique": text}) + "\n"
        for (c, d), texts in critiques.items() for t, text in zip(tampers, texts)))
    plot(report, out / "precision_recall.png")
    print(format_table(report))
    return report


def decode_all(name: str, evaluator: PolicyEvaluator, prompts: list[str], section) -> dict:
    """(critic, decoding) -> one critique per prompt."""
    out = {(name, "sample"): [s[0] for s in evaluator.complete(prompts, 1, step=0)]}
    samples = evaluator.complete(prompts, section.best_of, step=1)
    flat = evaluator.score_texts([p for p in prompts for _ in range(section.best_of)], [c for s in samples for c in s])
    out[(name, "best_of_n")] = [s[max(range(len(s)), key=lambda j: flat[i * section.best_of + j])]
                                for i, s in enumerate(samples)]
    if section.fsbs and name in section.fsbs_critics:
        fsbs_prompts = prompts[:section.fsbs_limit]
        rounds = itertools.count(2)          # a sampling stream per FSBS round (steps 0 and 1 are taken above)

        def sample(pairs, n):
            return evaluator.complete([fsbs_prompts[i] + prefix for i, prefix in pairs], n,
                                      step=next(rounds) * 10**4)

        def score(pairs):
            return evaluator.score_texts([fsbs_prompts[i] for i, _ in pairs], [text for _, text in pairs])

        searches = search_many(len(fsbs_prompts), sample, score, section.fsbs_n, section.fsbs_k, section.fsbs_rounds)
        for label in PERCENTILES:
            out[(name, f"fsbs_{label}")] = [choose(c, label).best.text for c in searches]
    return out


def summarize(tampers: list[dict], critiques: dict, scores: dict) -> dict:
    """A row per (critic, decoding) over the answers it decoded (the first len(texts) tampers); Elo from the
    critique RM's preferences on the answers two rows share."""
    rows = {}
    for (critic, decoding), texts in critiques.items():
        labels = [label_critique(text, t["tampered"], t["changed_lines"]) for t, text in zip(tampers, texts)]
        highlights = sum(x.highlights for x in labels)
        rows[f"{critic}/{decoding}"] = {
            "answers": len(labels),
            "cbi_rate": statistics.mean(x.catches_bug for x in labels),
            "hallucinated_rate": sum(x.hallucinated for x in labels) / highlights if highlights else 0.0,
            "unchanged_rate": sum(x.unchanged for x in labels) / highlights if highlights else 0.0,
            "mean_highlights": highlights / len(labels),
            "mean_length": statistics.mean(x.length for x in labels),
            "mean_rm_score": statistics.mean(scores[(critic, decoding)])}
    games = []
    for a, b in itertools.combinations(sorted(critiques), 2):
        for sa, sb in zip(scores[a], scores[b]):
            games.append(("/".join(a), "/".join(b), 1.0 if sa > sb else 0.0 if sa < sb else 0.5))
    for name, elo in elo_scores(games).items():
        rows[name]["elo"] = elo
    return {"answers": len(tampers), "rows": rows}


def format_table(report: dict) -> str:
    columns = ("answers", "cbi_rate", "hallucinated_rate", "unchanged_rate", "mean_highlights", "mean_length", "elo")
    head = f"{'critic/decoding':22s}" + "".join(f"{c:>18s}" for c in columns)
    lines = ["", f"critic evaluation on {report['answers']} held-out tampered answers", head, "-" * len(head)]
    for name, row in report["rows"].items():
        cells = (f"{row[c]:18d}" if c == "answers" else f"{row.get(c, float('nan')):18.3f}" for c in columns)
        lines.append(f"{name:22s}" + "".join(cells))
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """CBI rate (recall of the inserted bugs) against the share of highlights that are not on the bug (1 minus a
    precision), one point per (critic, decoding)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, row in report["rows"].items():
        x, y = row["hallucinated_rate"] + row["unchanged_rate"], row["cbi_rate"]
        ax.scatter(x, y)
        label = name if row["answers"] == report["answers"] else f"{name} ({row['answers']} answers)"
        ax.annotate(label, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("highlights not on the inserted bug (hallucinated + unchanged lines)")
    ax.set_ylabel("CBI rate (critiques that catch the inserted bug)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"critics on {report['answers']} held-out tampers")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_to_wandb(cfg, report: dict) -> None:
    """The table's numbers as one step of an `eval` run in the critic run's folder (metrics.jsonl and wandb)."""
    eval_cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"output_dir": str(cfg.run_dir),
                                                                        "name": "eval", "num_steps": 1}),
                                      "logging": cfg.logging.model_copy(update={"progress_bar": False})})
    log = RunLog(eval_cfg, resume=False)
    try:
        log.log(1, {f"critic_eval/{name}/{key}": value for name, row in report["rows"].items()
                    for key, value in row.items()})
    finally:
        log.close()
