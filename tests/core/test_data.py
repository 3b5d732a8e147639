"""Prompt and pretraining data through `datasets`, from real files, with errors naming file and row."""
import json

import pandas
import pytest

from rlhf.data.loading import DataError
from rlhf.data.pretrain import PretrainTexts
from rlhf.data.prompts import PromptStream, left_pad, load_prompt_texts, tokenize_prompts
from rlhf.models import build_char_tokenizer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_loads_jsonl_json_csv_parquet_and_folders(tmp_path):
    rows = [{"prompt": f"p{i}", "other": i} for i in range(5)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "b.json").write_text(json.dumps(rows))
    pandas.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    pandas.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    for name in ("a.jsonl", "b.json", "c.csv", "d.parquet"):
        texts, _ = load_prompt_texts(str(tmp_path / name), "prompt")
        assert texts == [f"p{i}" for i in range(5)], name
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "1.jsonl", rows[:2])
    write_jsonl(folder / "2.jsonl", rows[2:])
    assert len(load_prompt_texts(str(folder), "prompt")[0]) == 5


def test_bad_rows_are_named(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{"prompt": "oops"\n')
    with pytest.raises(DataError, match=r"broken.jsonl: line 2: invalid JSON"):
        load_prompt_texts(str(broken), "prompt")
    path = write_jsonl(tmp_path / "keys.jsonl", [{"prompt": "a"}, {"question": "b"}])
    with pytest.raises(DataError, match=r"keys.jsonl: row 2: missing key 'prompt'"):
        load_prompt_texts(path, "prompt")
    path = write_jsonl(tmp_path / "empty_text.jsonl", [{"prompt": "a"}, {"prompt": "  "}])
    with pytest.raises(DataError, match=r"empty_text.jsonl: row 2: 'prompt' is empty"):
        load_prompt_texts(path, "prompt")
    (tmp_path / "none.jsonl").write_text("")
    with pytest.raises(DataError, match="none.jsonl"):
        load_prompt_texts(str(tmp_path / "none.jsonl"), "prompt")
    with pytest.raises(DataError, match="unknown toy task"):
        load_prompt_texts("toy:nope", "prompt")


def test_prompt_length_limit_names_the_row():
    tokenizer = build_char_tokenizer()
    with pytest.raises(DataError, match=r"src: row 2: prompt has 10 tokens, over data.max_prompt_length 5"):
        tokenize_prompts(["abc", "abcdefghij"], tokenizer, 5, "src")


def test_left_pad_and_restorable_stream():
    ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]
    stream = PromptStream(5, seed=3)
    first = stream.next_indices(4)
    state = stream.state_dict()
    rest = stream.next_indices(6)                      # crosses into epoch 1
    assert sorted(first + rest[:1]) == list(range(5))
    again = PromptStream(5, seed=3)
    again.load_state_dict(state)
    assert again.next_indices(6) == rest


def test_pretrain_texts_batches(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "hello world"}, {"text": "abc"}])
    texts = PretrainTexts(path, "text", build_char_tokenizer(), max_length=5, seed=0)
    ids, mask = texts.next_batch(3)
    assert ids.shape == (3, 5) and set(mask.sum(dim=1).tolist()) <= {3, 5}
    assert mask.sum(dim=1).tolist()[:2] in ([5, 3], [3, 5])   # the first epoch serves each text once
