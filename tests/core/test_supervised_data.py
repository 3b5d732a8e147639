"""SFT and reward-model data: masks, K-wise batching (K forward passes per prompt), validation errors naming the
file and row, padding-aware batching, and the bias-normalization file."""
import json

import pytest
import torch

from rlhf.batches import (collate_rankings, collate_sft, flatten_rankings, length_grouped_order, split_shared_prefixes,
                          unflatten_scores)
from rlhf.config import RMConfig, SFTConfig
from rlhf.data.comparisons import tokenize_comparisons
from rlhf.data.demonstrations import tokenize_demonstrations
from rlhf.data.loading import DataError, load_rows
from rlhf.models import build_char_tokenizer, load_reward_normalization, save_reward_normalization
from rlhf.sharding import shard

TOKENIZER = build_char_tokenizer()


def test_sft_masks_prompt_tokens_and_pads():
    samples = tokenize_demonstrations([{"prompt": "ab", "response": "xyz"}, {"prompt": "a", "response": "q"}],
                                      SFTConfig(), TOKENIZER, "demo")
    assert samples[0] == (TOKENIZER("ab").input_ids, TOKENIZER("xyz").input_ids + [TOKENIZER.eos_token_id])
    batch = collate_sft(samples, TOKENIZER.pad_token_id)
    # loss only on the response and its EOS; never on prompt or padding
    assert batch.loss_mask.tolist() == [[0, 0, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]]
    assert batch.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert batch.input_ids[1, 3:].tolist() == [TOKENIZER.pad_token_id] * 3


def test_chat_messages_become_prompt_and_response():
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    (prompt, response), = tokenize_demonstrations([row], SFTConfig(), TOKENIZER, "chat")
    assert TOKENIZER.decode(prompt) == "user: hi\nassistant: "
    assert TOKENIZER.decode(response, skip_special_tokens=True) == "yo"


@pytest.mark.parametrize("row,message", [
    ({"prompt": "p", "response": " "}, "row 1: 'response' is empty"),
    ({"prompt": "p", "answer": "x"}, "row 1: missing key 'response'"),
    ({"question": "p", "answer": "x"}, "row 1: expected 'prompt'/'response' or 'messages' (row has: answer, question)"),
    ({"messages": [{"role": "user", "content": "x"}]}, "row 1: the last message should be the assistant's response"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}, "row 1: the assistant response is empty"),
])
def test_bad_demonstrations_name_file_and_row(row, message):
    with pytest.raises(DataError, match="demos.jsonl: " + message.replace("(", r"\(").replace(")", r"\)")):
        tokenize_demonstrations([row], SFTConfig(), TOKENIZER, "demos.jsonl")


def test_rankings_one_forward_per_response():
    rows = [{"prompt": "p", "responses": ["a", "bb", "ccc"], "ranks": [2, 1, 3]},
            {"prompt": "q", "chosen": "good", "rejected": "bad"}]
    groups = tokenize_comparisons(rows, RMConfig(), TOKENIZER, "cmp")
    batch = collate_rankings(groups, TOKENIZER.pad_token_id)
    assert batch.ranks.tolist() == [[2, 1, 3], [1, 2, 0]]
    ids, mask, valid = flatten_rankings(batch)
    assert ids.shape[0] == 5                      # K = 3 + K = 2 forward passes, not one per pair (3 + 1)
    assert TOKENIZER.decode(ids[3][mask[3].bool()], skip_special_tokens=True) == "qgood"
    scores = unflatten_scores(torch.arange(5.0), valid)
    assert scores.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 0.0]]
    assert len(shard(batch, 1, 2)) == 1


@pytest.mark.parametrize("row,message", [
    ({"prompt": "p", "responses": ["a"]}, "a comparison needs at least 2 responses, got 1"),
    ({"prompt": "p", "responses": ["a", "b", "a"], "ranks": [1, 2, 3]}, "the ranking lists the same response twice"),
    ({"prompt": "p", "responses": ["a", "b"], "ranks": [1]}, "2 responses but 1 ranks"),
    ({"prompt": "p", "responses": ["a", "b"], "ranks": [1, 1]}, "all responses tie"),
    ({"prompt": "p", "chosen": "a"}, "missing key 'rejected'"),
    ({"prompt": "p", "best": "a", "worst": "b"}, "expected 'chosen'/'rejected' or 'responses'"),
])
def test_bad_comparisons_name_file_and_row(row, message):
    with pytest.raises(DataError, match="cmp.jsonl: row 1: " + message):
        tokenize_comparisons([row], RMConfig(), TOKENIZER, "cmp.jsonl")


def test_comparisons_from_a_real_file(tmp_path):
    path = tmp_path / "cmp.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n" +
                    json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    assert len(tokenize_comparisons(load_rows(str(path), "comparisons"), RMConfig(), TOKENIZER, str(path))) == 2


def test_length_grouped_batches_cover_rows_with_little_padding():
    lengths = [1, 9, 2, 8, 1, 9, 2, 8]
    batches = length_grouped_order(lengths, batch_size=2, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(abs(lengths[a] - lengths[b]) <= 1 for a, b in batches)
    assert batches == length_grouped_order(lengths, batch_size=2, seed=0)


def test_bias_normalization_file(tmp_path):
    assert load_reward_normalization(tmp_path) == (0.0, 1.0)
    save_reward_normalization(tmp_path, 1.5, 2.0, "demos")
    assert load_reward_normalization(tmp_path) == (1.5, 2.0)


def test_toy_rankings_follow_the_ground_truth():
    from rlhf.data.toy import repeat_digit_comparisons, repeat_digit_score

    for row in repeat_digit_comparisons(num_rows=20):
        scores = [repeat_digit_score(row["prompt"], r) for r in row["responses"]]
        best = row["ranks"].index(1)
        assert scores[best] == max(scores)


def test_unnamed_list_column_is_not_read_as_ordered(tmp_path):
    row = {"prompt": "p", "responses": ["a", "b"], "ranking": [2, 1]}
    with pytest.raises(DataError, match="cmp.jsonl: row 1: list column 'ranking' is not named by the config and there "
                                        "is no 'ranks' column; if it holds the ranks, set rm.ranks_key: ranking"):
        tokenize_comparisons([row], RMConfig(), TOKENIZER, "cmp.jsonl")
    named = tokenize_comparisons([row], RMConfig(ranks_key="ranking"), TOKENIZER, "cmp.jsonl")
    assert named[0][1] == [2, 1]
    ordered = tokenize_comparisons([{"prompt": "p", "responses": ["a", "b"]}], RMConfig(), TOKENIZER, "cmp.jsonl")
    assert ordered[0][1] == [1, 2]


def test_rankings_share_each_prompts_prefix():
    groups = [([[5, 6, 7, 8], [5, 6, 7, 9, 9], [5, 6, 1]], [1, 2, 3]),
              ([[4, 4], [4, 4, 4]], [2, 1])]
    batch = collate_rankings(groups, pad_id=0)
    # the third response of the first prompt parts at its third token; the second prompt's shorter sequence keeps
    # its last token to itself
    assert batch.prefix_lengths.tolist() == [2, 1]
    rows = split_shared_prefixes(batch)
    assert rows.prefix_ids.tolist() == [[5, 6], [0, 4]] and rows.prefix_mask.tolist() == [[1, 1], [0, 1]]
    assert rows.owner.tolist() == [0, 0, 0, 1, 1]
    assert rows.tail_ids.tolist() == [[7, 8, 0], [7, 9, 9], [1, 0, 0], [4, 0, 0], [4, 4, 0]]
    assert rows.tail_mask.sum(dim=1).tolist() == [2, 3, 1, 1, 2]
    assert shard(batch, 1, 2).prefix_lengths.tolist() == [1]
