"""Force Sampling Beam Search (FSBS, McAleese et al. 2024), written against two callables so that it runs the same
in one process and on actors:

    sample(prefixes: list[str], n: int) -> list[list[str]]    n continuations of each critique prefix (no EOS)
    score(critiques: list[str]) -> list[float]                 the critique reward model's score of each

Round 1 forces a highlight opener and samples n critiques; each later round takes the k best of the previous
round by score, strips a last paragraph without a highlight, appends a new highlight opener and samples n more
of each: d rounds give n + (d - 1) k n candidates (28 for n = 4, k = 2, d = 4). The answer is the candidate with
the largest `score + LENGTH_MODIFIER * highlights`; LENGTH_MODIFIER is a number, or set from a percentile of the
highlight counts seen in the search ('p10', 'p25', 'p50', 'p75'): the smallest modifier whose choice has at
least that many highlights (larger modifiers buy comprehensiveness with precision).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from .critique import FENCE, parse_critique

OPENER = FENCE + "python\n"
PERCENTILES = {"p10": 10, "p25": 25, "p50": 50, "p75": 75}


@dataclass(frozen=True)
class Candidate:
    text: str
    score: float
    highlights: int
    round: int


@dataclass(frozen=True)
class FSBSResult:
    best: Candidate
    length_modifier: float
    candidates: list[Candidate]


def without_summary(text: str) -> str:
    """The critique with a last paragraph that has no highlight removed (kept when it is the only text)."""
    summary = parse_critique(text).summary
    body = text.rstrip()
    if summary and body.endswith(summary) and len(body) > len(summary):
        return body[:-len(summary)].rstrip()
    return body


def search(sample: Callable, score: Callable, n: int = 4, k: int = 2, d: int = 4,
           opener: str = OPENER) -> list[Candidate]:
    """All candidates of the d rounds for one prompt, in the order they were sampled."""
    return search_many(1, lambda pairs, m: sample([p for _, p in pairs], m),
                       lambda pairs: score([t for _, t in pairs]), n, k, d, opener)[0]


def search_many(prompts: int, sample: Callable, score: Callable, n: int = 4, k: int = 2, d: int = 4,
                opener: str = OPENER) -> list[list[Candidate]]:
    """`search` for `prompts` prompts in lockstep (one sample and one score call per round for all of them):
    `sample(pairs, n)` and `score(pairs)` take (prompt index, critique text) pairs."""
    candidates: list[list[Candidate]] = [[] for _ in range(prompts)]
    requests = [(i, opener) for i in range(prompts)]
    for round_ in range(1, d + 1):
        outs = sample(requests, n)
        pairs = [(i, prefix + c) for (i, prefix), continuations in zip(requests, outs) for c in continuations]
        scores = score(pairs)
        if len(scores) != len(pairs):
            raise ValueError(f"score returned {len(scores)} scores for {len(pairs)} critiques")
        new: list[list[Candidate]] = [[] for _ in range(prompts)]
        for (i, text), value in zip(pairs, scores):
            new[i].append(Candidate(text, float(value), len(parse_critique(text).highlights), round_))
        requests = []
        for i in range(prompts):
            candidates[i] += new[i]
            best = sorted(range(len(new[i])), key=lambda j: (-new[i][j].score, j))[:k]
            requests += [(i, without_summary(new[i][j].text) + "\n\n" + opener) for j in best]
    return candidates


def percentile(values: list[int], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def select(candidates: list[Candidate], length_modifier: float) -> Candidate:
    """argmax of score + length_modifier * highlights (the first on ties)."""
    return max(candidates, key=lambda c: c.score + length_modifier * c.highlights)


def modifier_for_percentile(candidates: list[Candidate], q: float) -> float:
    """The smallest modifier >= 0 whose choice has at least the q-th percentile of the highlight counts: the
    choice only changes where two candidates tie, so those points are the ones to try."""
    target = percentile([c.highlights for c in candidates], q)
    points = {0.0}
    for a in candidates:
        for b in candidates:
            if b.highlights > a.highlights and a.score > b.score:
                points.add((a.score - b.score) / (b.highlights - a.highlights))
    for point in sorted(points):
        # just past a tie point the candidate with more highlights wins it
        modifier = point * (1 + 1e-9) + (1e-12 if point == 0 else 0)
        if select(candidates, modifier).highlights >= target:
            return modifier
    return max(points) * (1 + 1e-9) + 1e-12


def choose(candidates: list[Candidate], length_modifier: Union[float, str]) -> FSBSResult:
    """The FSBS answer among one prompt's candidates for `length_modifier` (a number, or 'p10' / 'p25' / 'p50' /
    'p75')."""
    if isinstance(length_modifier, str):
        if length_modifier not in PERCENTILES:
            raise ValueError(f"length_modifier {length_modifier!r}: a number or one of {', '.join(PERCENTILES)}")
        length_modifier = modifier_for_percentile(candidates, PERCENTILES[length_modifier])
    return FSBSResult(select(candidates, length_modifier), float(length_modifier), candidates)


def fsbs(sample: Callable, score: Callable, n: int = 4, k: int = 2, d: int = 4,
         length_modifier: Union[float, str] = "p50", opener: str = OPENER) -> FSBSResult:
    """Search, then choose with `length_modifier`."""
    if isinstance(length_modifier, str) and length_modifier not in PERCENTILES:
        raise ValueError(f"length_modifier {length_modifier!r}: a number or one of {', '.join(PERCENTILES)}")
    return choose(search(sample, score, n, k, d, opener), length_modifier)
