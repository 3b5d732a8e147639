"""What the CriticGPT stages feed the SFT, reward-model and PPO stages: the critic's prompt for a (question,
answer) pair, SFT rows of gold critiques, K-wise ranking rows of sampled + gold critiques ranked by their automatic
labels, and PPO prompts. Plain rows, written as JSONL that `rlhf sft` / `rlhf rm` / `rlhf ppo` read."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from .critique import (CritiqueLabels, Highlight, changed_quote, format_critique, gold_critique, label_critique,
                       parse_critique, quoted_lines)
from .mutations import MutationError, apply_site, find_sites
from .tamper import changed_span, describe

PROMPT = "Find the bug. Quote it in a ```python block, then explain.\n```python\n{code}```\nCritique:\n"


def critic_prompt(code: str) -> str:
    """The critic's prompt for an answer; its code holds the question too (signature and docstring)."""
    return PROMPT.format(code=code if code.endswith("\n") else code + "\n")


def tamper_prompt(tamper: dict) -> str:
    return critic_prompt(tamper["tampered"])


def gold_of(tamper: dict) -> str:
    return gold_critique(tamper["tampered"], tamper["changed_lines"], tamper["description"])


def sft_rows(tampers, second_comments: float = 0.0, seed: int = 0) -> list[dict]:
    """One demonstration per tamper: its critic prompt and its gold critique; a seeded `second_comments` share of
    them also comment on a line the tamper left alone (`with_second_comment`)."""
    rows = []
    for index, tamper in enumerate(tampers):
        rng = random.Random(f"{seed}/{index}")
        gold = gold_of(tamper)
        if rng.random() < second_comments:
            gold = with_second_comment(tamper, gold, rng)
        rows.append({"prompt": tamper_prompt(tamper), "response": gold})
    return rows


def untouched_lines(tamper: dict) -> list[int]:
    """Lines of the answer's statements (mutation sites) that the tamper left alone, in order."""
    first, last = tamper["changed_lines"]
    return sorted({s.line for s in find_sites(tamper["tampered"], tamper["entry_point"])
                   if not first <= s.line <= last})


def with_second_comment(tamper: dict, gold: str, rng: random.Random) -> str:
    """`gold` plus a comment quoting one statement the tamper left alone, saying it is not the bug, in a random
    order with the bug's comment (the gold critique alone when every statement was changed)."""
    code, lines = tamper["tampered"], untouched_lines(tamper)
    if not lines:
        return gold
    line = rng.choice(lines)
    quote = code.splitlines()[line - 1].strip()
    other = format_critique([Highlight(quote, f"Line {line}: `{quote}` matches the docstring; not the bug.")])
    return "\n\n".join([gold, other] if rng.random() < 0.5 else [other, gold])


def fake_problem_critiques(tamper: dict, count: int, seed: int, hallucinated: bool = False) -> list[str]:
    """Up to `count` critiques in the gold one's words that blame a line the tamper left alone (the paper's fake
    problems): each presents a seeded edit of an unchanged line as the fix. In a ranking they differ from the gold
    critique only in the line they blame, so the critique RM learns which line holds the bug, not how a gold
    critique reads (the sampled critiques differ from it in everything).
    With `hallucinated`, each quotes the edited line itself, which is not in the answer and reads like a bug:
    ranked below everything that quotes the code, it teaches the RM to check a quote against the code (a critic
    trained against an RM that cannot learns to quote bugs that are not there)."""
    code, (first, last) = tamper["tampered"], tamper["changed_lines"]
    sites = [s for s in find_sites(code, tamper["entry_point"]) if not first <= s.line <= last]
    random.Random(seed).shuffle(sites)
    out: list[str] = []
    for site in sites:
        if len(out) == count:
            break
        try:
            edited = apply_site(code, tamper["entry_point"], site).source
        except MutationError:
            continue
        span, fix, blamed = changed_span(edited, code)
        if span[0] <= last and first <= span[1]:
            continue
        if hallucinated:
            edited_span, _, quoted = changed_span(code, edited)      # the edit claimed as the code, and its fix
            text = gold_critique(edited, edited_span,
                                 describe(site.operator, span, blamed, quoted, tamper["failing_test"]))
            if not label_critique(text, code, tamper["changed_lines"]).hallucinated:
                continue                  # the edited line happens to be another line of the answer
        else:
            text = gold_critique(code, span, describe(site.operator, span, fix, blamed, tamper["failing_test"]))
        if text not in out:
            out.append(text)
    return out


def swapped_quote_critiques(tamper: dict, sampled: list[str], count: int, seed: int) -> list[str]:
    """Up to `count` of the critic's own sampled critiques with one quote swapped, the rest of the text kept: one
    that misses the bug now quotes the changed lines in its first highlight, one that catches it quotes a statement
    the tamper left alone instead. Ranked by their labels next to the originals, each pair differs only in the line
    it quotes, in the critic's own words: the contrast PPO's samples present to the RM (the gold and fake-problem
    critiques give it in the gold wording only)."""
    code, (first, last) = tamper["tampered"], tamper["changed_lines"]
    lines, bug, others = code.splitlines(), changed_quote(code, tamper["changed_lines"]), untouched_lines(tamper)
    rng = random.Random(seed)
    order = list(dict.fromkeys(c for c in sampled if c.strip()))
    rng.shuffle(order)
    out: list[str] = []
    for text in order:
        if len(out) == count:
            break
        critique = parse_critique(text)
        if not critique.highlights:
            continue
        hits = [i for i, h in enumerate(critique.highlights)
                if any(first <= n <= last for n in quoted_lines(h.quote, code) or [])]
        if hits and not others:
            continue
        index = hits[0] if hits else 0
        line = rng.choice(others) if hits else first
        quote = lines[line - 1].strip() if hits else bug
        highlights = list(critique.highlights)
        old = highlights[index]
        # the comment's own mentions of the quote and its line follow the swap, as the critic would write them
        comment = re.sub(r"\bLine \d+", f"Line {line}", old.comment.replace(old.quote.strip(), quote), count=1)
        highlights[index] = Highlight(quote, comment)
        swapped = format_critique(highlights, critique.summary)
        if critique.preamble:
            swapped = critique.preamble + "\n\n" + swapped
        if swapped not in out and swapped not in sampled:
            out.append(swapped)
    return out


def preference_key(labels: CritiqueLabels) -> tuple:
    """Smaller is better: catches the inserted bug, then fewer hallucinated highlights, fewer highlights on
    unchanged lines, well-formed, shorter (the paper's CBI, fake problems, nitpicks and conciseness, in order)."""
    return (not labels.catches_bug, labels.hallucinated, labels.unchanged, labels.malformed, labels.length)


def ranking_row(tamper: dict, sampled: list[str], fakes: tuple[str, ...] | list[str] = ()) -> dict | None:
    """K-wise ranking of the distinct sampled critiques, the gold one and `fakes` by `preference_key` (rank 1 =
    best, equal keys share a rank); None when fewer than two distinct non-empty critiques remain or all tie."""
    critiques = []
    for text in [gold_of(tamper), *sampled, *fakes]:
        if text.strip() and text not in critiques:
            critiques.append(text)
    if len(critiques) < 2:
        return None
    keys = [preference_key(label_critique(c, tamper["tampered"], tamper["changed_lines"])) for c in critiques]
    distinct = sorted(set(keys))
    if len(distinct) < 2:
        return None
    return {"prompt": tamper_prompt(tamper), "responses": critiques, "ranks": [distinct.index(k) + 1 for k in keys]}


def missed_by_some(tamper: dict, sampled: list[str]) -> bool:
    """The adversarial filter: the critic misses the inserted bug in at least one of its samples."""
    return any(not label_critique(c, tamper["tampered"], tamper["changed_lines"]).catches_bug for c in sampled)


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.replace(path)
    return path
