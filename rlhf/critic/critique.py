"""The critique format and what can be measured of a critique without a human.

A critique is a list of comments; each quotes part of the answer in a markdown code block (a "highlight", opened
with three backticks) followed by a comment on the problem; it may end with a summary paragraph without one:

    ```python
    if balance <= 0:
    ```
    This flags a zero balance as below zero; the check must be `< 0`.

    Otherwise the function is fine.

`parse_critique` reads model output as it comes (an unclosed block runs to the end, empty quotes are dropped and
counted, text before the first highlight is a preamble); `label_critique` gives the automatic labels against a
tamper's ground truth; `gold_critique` renders the reference description in the format.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

FENCE = "```"
_OPENER = re.compile(r"^[ \t]*```[\w+-]*[ \t]*$")


@dataclass(frozen=True)
class Highlight:
    quote: str           # the quoted code, as written in the block
    comment: str         # the text after the block, up to the next block


@dataclass
class Critique:
    highlights: list[Highlight] = field(default_factory=list)
    preamble: str = ""           # text before the first highlight
    summary: str = ""            # a last paragraph with no highlight after it (split off the last comment)
    unclosed: bool = False       # a block was opened and never closed (it runs to the end)
    empty_quotes: int = 0        # blocks with nothing in them (dropped)


def parse_critique(text: str) -> Critique:
    """Highlights of `text`, tolerant of malformed output; never raises."""
    critique = Critique()
    lines = text.replace("\r\n", "\n").split("\n")
    i, prose, pending = 0, [], None       # pending: the quote whose comment is being collected
    while i < len(lines):
        if _OPENER.match(lines[i]):
            _flush(critique, pending, prose)
            j = i + 1
            while j < len(lines) and lines[j].strip() != FENCE:
                j += 1
            if j == len(lines):
                critique.unclosed = True
            quote = textwrap.dedent("\n".join(lines[i + 1:j])).strip("\n")
            if quote.strip():
                pending = quote
            else:
                critique.empty_quotes += 1
                pending = None
            prose, i = [], j + 1
            continue
        prose.append(lines[i])
        i += 1
    _flush(critique, pending, prose)
    _split_summary(critique)
    return critique


def _flush(critique: Critique, quote: str | None, prose: list[str]) -> None:
    text = "\n".join(prose).strip()
    if quote is not None:
        critique.highlights.append(Highlight(quote, text))
    elif not critique.highlights and not critique.preamble:
        critique.preamble = text
    elif text:      # prose after an empty block: part of the summary candidates
        critique.summary = (critique.summary + "\n\n" + text).strip()


def _split_summary(critique: Critique) -> None:
    """A last comment of several paragraphs ends with a summary: its last paragraph."""
    if critique.highlights and not critique.summary:
        last = critique.highlights[-1]
        paragraphs = [p for p in re.split(r"\n\s*\n", last.comment) if p.strip()]
        if len(paragraphs) > 1:
            critique.highlights[-1] = Highlight(last.quote, "\n\n".join(paragraphs[:-1]).strip())
            critique.summary = paragraphs[-1].strip()


@dataclass(frozen=True)
class CritiqueLabels:
    catches_bug: bool            # CBI: a highlight quotes a changed line
    highlights: int
    hallucinated: int            # highlights quoting code that is not in the answer
    unchanged: int               # highlights on lines the tamper did not change (nitpicks or fake problems),
                                 # or fragments found on several lines
    length: int                  # characters
    malformed: bool              # an unclosed block or an empty quote

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def quoted_lines(quote: str, code: str) -> list[int] | None:
    """1-based lines of `code` a quote points at (each non-blank quoted line matched, whitespace-insensitively, to
    a line of the code that holds it); None when some quoted line is in no line of the code (hallucinated)."""
    resolved = _resolve(quote, code)
    return None if resolved is None else resolved[0]


def _resolve(quote: str, code: str) -> tuple[list[int], bool] | None:
    """(the lines a quote points at, whether it singles them out), or None when it is not in the code. A quoted
    line equal to code lines points at those (identical lines are the same code); a fragment points at every line
    holding it, and one held by several lines (`b`, ` = `) does not single out any of them."""
    code_lines = [_squash(line) for line in code.splitlines()]
    found, specific = [], True
    for line in (_squash(q) for q in quote.splitlines()):
        if not line:
            continue
        exact = [n for n, c in enumerate(code_lines, start=1) if c == line]
        inside = exact or [n for n, c in enumerate(code_lines, start=1) if line in c]
        if not inside:
            return None
        specific = specific and (bool(exact) or len(inside) == 1)
        found += inside
    return (sorted(set(found)), specific) if found else None


def _squash(text: str) -> str:
    return " ".join(text.split())


def label_critique(text: str, code: str, changed_lines: list[int]) -> CritiqueLabels:
    """The automatic labels of critique `text` on the answer `code` whose lines `changed_lines` ([first, last])
    hold the inserted bug."""
    critique = parse_critique(text)
    first, last = changed_lines
    catches, hallucinated, unchanged = False, 0, 0
    for highlight in critique.highlights:
        resolved = _resolve(highlight.quote, code)
        if resolved is None:
            hallucinated += 1
        elif resolved[1] and any(first <= n <= last for n in resolved[0]):
            catches = True
        else:
            unchanged += 1          # on lines the tamper left alone, or a fragment that does not single one out
    return CritiqueLabels(catches, len(critique.highlights), hallucinated, unchanged, len(text),
                          critique.unclosed or critique.empty_quotes > 0)


def changed_quote(tampered: str, changed_lines: list[int]) -> str:
    """The changed lines [first, last] of `tampered` as a highlight quotes them (dedented)."""
    first, last = changed_lines
    return textwrap.dedent("\n".join(tampered.splitlines()[first - 1:last])).strip("\n")


def gold_critique(tampered: str, changed_lines: list[int], description: str) -> str:
    """The reference rendered as a critique: the changed lines in a highlight, then the description."""
    return f"{FENCE}python\n{changed_quote(tampered, changed_lines)}\n{FENCE}\n{description}"


def format_critique(highlights: list[Highlight], summary: str = "") -> str:
    """Highlights (and a summary) in the critique format; `parse_critique` reads it back unchanged."""
    parts = [f"{FENCE}python\n{h.quote}\n{FENCE}\n{h.comment}".rstrip() for h in highlights]
    if summary:
        parts.append(summary)
    return "\n\n".join(parts)
