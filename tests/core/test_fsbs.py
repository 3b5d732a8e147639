"""FSBS by hand with deterministic sample / score callables: the forced openers, the k best extended after their
summary is dropped, 28 candidates for n=4, k=2, d=4, and the choice along the LENGTH_MODIFIER sweep."""
import pytest

from rlhf.critic.fsbs import Candidate, OPENER, fsbs, modifier_for_percentile, percentile, search, search_many, \
    select, without_summary


def test_without_summary_drops_only_a_last_paragraph_without_highlight():
    text = "```python\nx = 1\n```\nWrong constant.\n\nOverall fine."
    assert without_summary(text) == "```python\nx = 1\n```\nWrong constant."
    assert without_summary("```python\nx = 1\n```\nWrong constant.") == "```python\nx = 1\n```\nWrong constant."
    assert without_summary("Just a summary.") == "Just a summary."


def test_search_extends_the_k_best_with_a_new_forced_highlight():
    seen = []

    def sample(prefixes, n):
        seen.append(list(prefixes))
        return [[f"line{i}\n```\nc{i}\n\nsummary" for i in range(n)] for _ in prefixes]

    def score(texts):      # later comments score higher: c1 > c0, and longer critiques more
        return [t.count("c1") * 1.0 + t.count("```python") * 0.1 for t in texts]

    candidates = search(sample, score, n=2, k=1, d=3)
    assert len(candidates) == 2 + 2 * (1 * 2)
    assert seen[0] == [OPENER]
    # round 2 extends round 1's best (c1) with its summary dropped and a new opener
    assert seen[1] == ["```python\nline1\n```\nc1\n\n```python\n"]
    assert seen[2] == ["```python\nline1\n```\nc1\n\n```python\nline1\n```\nc1\n\n```python\n"]
    assert [c.highlights for c in candidates] == [1, 1, 2, 2, 3, 3]
    assert [c.round for c in candidates] == [1, 1, 2, 2, 3, 3]
    assert len(search(sample, score)) == 28                        # n=4, k=2, d=4: 4 + 3 x 2 x 4


def test_length_modifier_trades_score_for_highlights():
    pool = [Candidate("a", 1.0, 1, 1), Candidate("b", 0.8, 2, 2), Candidate("c", 0.2, 4, 3), Candidate("d", 0.9, 1, 1)]
    assert select(pool, 0.0).text == "a"
    assert select(pool, 0.3).text == "b"                  # 1.0 + 0.3 < 0.8 + 0.6
    assert select(pool, 1.0).text == "c"                  # 0.2 + 4 beats 0.8 + 2
    assert percentile([1, 2, 4, 1], 50) == 1.5 and percentile([1, 2, 4, 1], 75) == 2.5
    # p50 of highlight counts is 1.5: the smallest modifier choosing >= 2 highlights is where a and b tie (0.2)
    assert modifier_for_percentile(pool, 50) == pytest.approx(0.2)
    assert select(pool, modifier_for_percentile(pool, 50)).text == "b"
    # p75 is 2.5: b and c tie at 0.3
    assert modifier_for_percentile(pool, 75) == pytest.approx(0.3)
    assert select(pool, modifier_for_percentile(pool, 75)).text == "c"
    assert modifier_for_percentile(pool, 10) == pytest.approx(0.0, abs=1e-9)


def test_fsbs_returns_the_chosen_candidate_and_checks_its_inputs():
    sample = lambda prefixes, n: [["x = 1\n```\nbad" for _ in range(n)] for _ in prefixes]
    result = fsbs(sample, lambda texts: [0.0] * len(texts), n=2, k=1, d=2, length_modifier="p75")
    assert len(result.candidates) == 4 and result.best.highlights == 2
    with pytest.raises(ValueError, match="length_modifier 'p99'"):
        fsbs(sample, lambda texts: [0.0] * len(texts), length_modifier="p99")
    with pytest.raises(ValueError, match="score returned 1 scores for 4 critiques"):
        fsbs(sample, lambda texts: [0.0])


def test_search_many_runs_prompts_in_lockstep_with_the_single_prompt_result():
    calls = []

    def sample(pairs, n):
        calls.append(len(pairs))
        return [[f"p{i} line{j}\n```\nc{j}" for j in range(n)] for i, _ in pairs]

    def score(pairs):
        return [float(text.count("c1")) - i for i, text in pairs]

    many = search_many(2, sample, score, n=2, k=1, d=3)
    assert calls == [2, 2, 2]                   # one sample call per round for both prompts (k=1 prefix each)
    for i in range(2):
        single = search(lambda prefixes, n: sample([(i, p) for p in prefixes], n),
                        lambda texts: score([(i, t) for t in texts]), n=2, k=1, d=3)
        assert many[i] == single
