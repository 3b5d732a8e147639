"""SFT demonstrations: prompt/response rows or chat messages, validated (file and row named) and tokenized with
the response (and a closing EOS) as the only training target."""
from __future__ import annotations

from .loading import DataError, at_row, require_text


def _chat_pair(row: dict, key: str, source: str, index: int) -> tuple[list[dict], str]:
    messages = row[key]
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{at_row(source, index)}: {key!r} should be a non-empty list of {{role, content}} messages")
    for m, message in enumerate(messages):
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            raise DataError(f"{at_row(source, index)}: message {m} needs 'role' and 'content'")
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{at_row(source, index)}: the last message should be the assistant's response")
    if not str(messages[-1]["content"]).strip():
        raise DataError(f"{at_row(source, index)}: the assistant response is empty")
    return messages[:-1], messages[-1]["content"]


def tokenize_demonstrations(rows: list[dict], section, tokenizer, source: str) -> list[tuple[list[int], list[int]]]:
    """[(prompt ids, response ids + EOS)]; `section` is the SFTConfig."""
    samples = []
    for index, row in enumerate(rows):
        if row.get(section.messages_key) is not None:
            history, response = _chat_pair(row, section.messages_key, source, index)
            if tokenizer.chat_template is None:
                raise DataError(f"{at_row(source, index)}: chat messages need a tokenizer with a chat template")
            prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
        else:
            if section.prompt_key not in row and section.response_key not in row:
                raise DataError(f"{at_row(source, index)}: expected {section.prompt_key!r}/{section.response_key!r} or "
                                f"{section.messages_key!r} (row has: {', '.join(sorted(row))})")
            prompt = require_text(row, section.prompt_key, source, index)
            response = require_text(row, section.response_key, source, index)
            if section.apply_chat_template:
                prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                       add_generation_prompt=True)
        samples.append(encode_pair(tokenizer, prompt, response, section.max_length, source, index))
    if not samples:
        raise DataError(f"{source}: no demonstrations")
    return samples


def encode_pair(tokenizer, prompt: str, response: str, max_length: int, source: str, index: int):
    """Prompt ids and response ids + EOS, the response cut so the pair fits in `max_length`."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(prompt_ids) >= max_length:
        raise DataError(f"{at_row(source, index)}: prompt has {len(prompt_ids)} tokens, leaving no room for the "
                        f"response within max_length {max_length}")
    return prompt_ids, response_ids[:max_length - len(prompt_ids)]
