"""Reward-model comparisons: chosen/rejected pairs or K-wise rankings, validated (file and row named) and
tokenized as K prompt+response sequences per prompt."""
from __future__ import annotations

from ..algo.losses import ranking_pairs
from .demonstrations import encode_pair
from .loading import DataError, at_row, require_text


def parse_comparison(row: dict, section, source: str, index: int) -> tuple[str, list[str], list[int]]:
    """(prompt, K responses, K ranks with 1 = best) from a pair row or a ranking row; `section` is the RMConfig."""
    prompt = require_text(row, section.prompt_key, source, index)
    if row.get(section.responses_key) is not None:
        responses = row[section.responses_key]
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise DataError(f"{at_row(source, index)}: {section.responses_key!r} should be a list of strings")
        ranks = row.get(section.ranks_key)
        if ranks is None:
            unnamed = sorted(k for k, v in row.items() if isinstance(v, list) and k != section.responses_key)
            if unnamed:
                raise DataError(f"{at_row(source, index)}: list column {unnamed[0]!r} is not named by the config and "
                                f"there is no {section.ranks_key!r} column; if it holds the ranks, set "
                                f"rm.ranks_key: {unnamed[0]}")
            ranks = list(range(1, len(responses) + 1))   # no ranks at all: the responses are ordered best first
        ranks = list(ranks)
        if len(ranks) != len(responses):
            raise DataError(f"{at_row(source, index)}: {len(responses)} responses but {len(ranks)} ranks")
        if not all(isinstance(r, int) and r >= 1 for r in ranks):
            raise DataError(f"{at_row(source, index)}: ranks should be integers >= 1 (1 = best)")
    elif section.chosen_key in row or section.rejected_key in row:
        responses = [require_text(row, section.chosen_key, source, index),
                     require_text(row, section.rejected_key, source, index)]
        ranks = [1, 2]
    else:
        raise DataError(f"{at_row(source, index)}: expected {section.chosen_key!r}/{section.rejected_key!r} or "
                        f"{section.responses_key!r} (row has: {', '.join(sorted(row))})")
    if len(responses) < 2:
        raise DataError(f"{at_row(source, index)}: a comparison needs at least 2 responses, got {len(responses)}")
    if any(not r.strip() for r in responses):
        raise DataError(f"{at_row(source, index)}: a response is empty")
    if len(set(responses)) != len(responses):
        raise DataError(f"{at_row(source, index)}: the ranking lists the same response twice")
    if not ranking_pairs(ranks):
        raise DataError(f"{at_row(source, index)}: all responses tie, so there is no pair to learn from")
    return prompt, responses, ranks


def tokenize_comparisons(rows: list[dict], section, tokenizer, source: str):
    """[(K token sequences, K ranks)] ready for `collate_rankings`."""
    groups = []
    for index, row in enumerate(rows):
        prompt, responses, ranks = parse_comparison(row, section, source, index)
        if section.apply_chat_template:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                   add_generation_prompt=True)
        sequences = []
        for response in responses:
            prompt_ids, response_ids = encode_pair(tokenizer, prompt, response, section.max_length, source, index)
            sequences.append(prompt_ids + response_ids)
        groups.append((sequences, ranks))
    if not groups:
        raise DataError(f"{source}: no comparisons")
    return groups
