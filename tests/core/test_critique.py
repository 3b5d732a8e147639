"""The critique format by hand: parsing well-formed and malformed output, the automatic labels against a tamper's
changed lines, and the gold critique rendered from a reference."""
from rlhf.critic.critique import (Highlight, format_critique, gold_critique, label_critique, parse_critique,
                                  quoted_lines)

CODE = '''def below_zero(operations):
    balance = 0
    for op in operations:
        balance += op
        if balance <= 0:
            return True
    return False
'''
CHANGED = [5, 5]       # the tamper turned `< 0` into `<= 0`

TOY_TAMPER = {"tampered": 'def f1(x):\n    """Apply +8, then +3, then -8."""\n    a=x+8\n    b=a+3\n    return b-9\n',
              "changed_lines": [5, 5], "entry_point": "f1", "failing_test": "assert candidate(1) == 4",
              "description": "Line 5: `return b-9` uses the wrong constant; it should be `return b-8`."}

CRITIQUE = '''```python
if balance <= 0:
```
A balance of exactly zero is reported as below zero; the check must be `< 0`.

```
    return False
```
Nitpick: an early `else` would read better.

Apart from that the function is correct.'''


def test_parse_well_formed_critique_into_highlights_and_summary():
    critique = parse_critique(CRITIQUE)
    assert critique.highlights == [
        Highlight("if balance <= 0:", "A balance of exactly zero is reported as below zero; the check must be `< 0`."),
        Highlight("return False", "Nitpick: an early `else` would read better.")]
    assert critique.summary == "Apart from that the function is correct."
    assert (critique.preamble, critique.unclosed, critique.empty_quotes) == ("", False, 0)
    assert parse_critique(format_critique(critique.highlights, critique.summary)).highlights == critique.highlights


def test_parse_tolerates_malformed_output():
    unclosed = parse_critique("Looks risky:\n```python\nbalance += op\nno closing fence here")
    assert unclosed.preamble == "Looks risky:" and unclosed.unclosed
    assert unclosed.highlights == [Highlight("balance += op\nno closing fence here", "")]
    empty = parse_critique("```\n```\nNothing quoted.\n``` \n   \n```\nstill nothing")
    assert (empty.highlights, empty.empty_quotes) == ([], 2)
    assert parse_critique("").highlights == [] and parse_critique("no code at all").preamble == "no code at all"
    inline = parse_critique("The ``` fence is inline here, not a block")
    assert inline.highlights == [] and not inline.unclosed


def test_labels_catch_hallucinate_and_nitpick():
    assert quoted_lines("if   balance <= 0:", CODE) == [5]                 # whitespace-insensitive
    assert quoted_lines("balance", CODE) == [2, 4, 5]                      # a fragment: every line holding it
    assert quoted_lines("if balance < 0:", CODE) is None                   # not in the answer
    labels = label_critique(CRITIQUE, CODE, CHANGED)
    assert labels.as_dict() == {"catches_bug": True, "highlights": 2, "hallucinated": 0, "unchanged": 1,
                                "length": len(CRITIQUE), "malformed": False}
    wrong = "```python\nif balance < 0:\n```\nShould be <=.\n\n```python\nreturn False\n```\nfine"
    labels = label_critique(wrong, CODE, CHANGED)
    assert (labels.catches_bug, labels.hallucinated, labels.unchanged) == (False, 1, 1)
    assert label_critique("```python\n\n```\n", CODE, CHANGED).malformed
    # a fragment held by several lines (the bug's among them) does not single the bug out: no CBI for quoting `<=`
    # ... unless only the changed line holds it
    vague = label_critique("```python\nbalance\n```\nsomething is off", CODE, CHANGED)
    assert (vague.catches_bug, vague.hallucinated, vague.unchanged) == (False, 0, 1)
    assert label_critique("```python\n<= 0\n```\nshould be <", CODE, CHANGED).catches_bug


def test_gold_critique_quotes_the_changed_lines_and_catches_the_bug():
    gold = gold_critique(CODE, CHANGED, "Line 5: `if balance <= 0:` uses the wrong comparison operator.")
    assert gold == ("```python\nif balance <= 0:\n```\nLine 5: `if balance <= 0:` uses the wrong comparison "
                    "operator.")
    labels = label_critique(gold, CODE, CHANGED)
    assert labels.catches_bug and labels.highlights == 1 and labels.hallucinated == labels.unchanged == 0
    two_lines = gold_critique(CODE, [5, 6], "d")
    assert two_lines.startswith("```python\nif balance <= 0:\n    return True\n```")


def test_fake_problem_critiques_blame_an_unchanged_line_in_the_gold_words_and_rank_below_gold():
    from rlhf.critic.data import fake_problem_critiques, gold_of, ranking_row

    tamper = {"tampered": 'def f1(x):\n    """Apply +8, then +3, then -8."""\n    a=x+8\n    b=a+3\n    return b-9\n',
              "entry_point": "f1", "changed_lines": [5, 5], "failing_test": "assert candidate(1) == 4",
              "description": "Line 5: `return b-9` uses the wrong constant; it should be `return b-8`. As written, "
                             "this test fails: `assert candidate(1) == 4`"}
    fakes = fake_problem_critiques(tamper, 3, seed=0)
    assert len(fakes) == 3 and len(set(fakes)) == 3 and fakes == fake_problem_critiques(tamper, 3, seed=0)
    for fake in fakes:
        labels = label_critique(fake, tamper["tampered"], tamper["changed_lines"])
        assert (labels.catches_bug, labels.hallucinated, labels.unchanged) == (False, 0, 1)
        quote = parse_critique(fake).highlights[0].quote
        assert quote in ("a=x+8", "b=a+3")                          # an exact copy of a line the tamper left alone
        assert parse_critique(fake).highlights[0].comment.startswith(f"Line {3 if quote == 'a=x+8' else 4}: `{quote}`")
        assert fake.endswith("As written, this test fails: `assert candidate(1) == 4`")
    assert fake_problem_critiques(tamper, 0, seed=0) == []
    row = ranking_row(tamper, ["```python\nreturn b-7\n```\nwrong"], fakes[:1])
    assert row["responses"][0] == gold_of(tamper) and row["ranks"][0] == 1
    assert row["ranks"][2] < row["ranks"][1]                  # a real line blamed ranks above a hallucinated quote

    # hallucinated fakes: the edit itself quoted (not in the answer), the real line given as its fix
    invented = fake_problem_critiques(tamper, 2, seed=0, hallucinated=True)
    assert len(invented) == 2
    for fake, real in zip(invented, fakes):
        labels = label_critique(fake, tamper["tampered"], tamper["changed_lines"])
        assert (labels.catches_bug, labels.hallucinated, labels.unchanged) == (False, 1, 0)
        quote = parse_critique(fake).highlights[0].quote
        real_quote = parse_critique(real).highlights[0].quote
        assert quote not in tamper["tampered"] and fake.split("should be `")[1].startswith(real_quote + "`")
    ranks = ranking_row(tamper, [], fakes[:1] + invented[:1])["ranks"]
    assert ranks == [1, 2, 3]                                  # gold, then the real-line fake, then the invented one


def test_second_comments_quote_an_unchanged_statement_beside_the_bug_in_a_seeded_order():
    from rlhf.critic.data import gold_of, sft_rows

    tamper = TOY_TAMPER
    assert [r["response"] for r in sft_rows([tamper] * 3)] == [gold_of(tamper)] * 3      # off by default
    rows = [r["response"] for r in sft_rows([tamper] * 40, second_comments=1.0, seed=3)]
    assert rows == [r["response"] for r in sft_rows([tamper] * 40, second_comments=1.0, seed=3)]
    orders = set()
    for text in rows:
        critique = parse_critique(text)
        quotes = [h.quote for h in critique.highlights]
        assert len(quotes) == 2 and "return b-9" in quotes                    # the bug, and one other statement
        other = next(q for q in quotes if q != "return b-9")
        assert other in ("a=x+8", "b=a+3") and f"`{other}` matches the docstring; not the bug." in text
        labels = label_critique(text, tamper["tampered"], tamper["changed_lines"])
        assert labels.catches_bug and labels.unchanged == 1 and labels.hallucinated == 0
        orders.add(quotes.index("return b-9"))
    assert orders == {0, 1}                                    # the bug's comment comes first or second
    half = sft_rows([tamper] * 200, second_comments=0.5, seed=0)
    assert 70 < sum(len(parse_critique(r["response"]).highlights) == 2 for r in half) < 130


def test_swapped_quote_critiques_change_only_the_line_quoted_and_rank_by_it():
    from rlhf.critic.data import ranking_row, swapped_quote_critiques

    tamper = TOY_TAMPER
    miss = "```python\nb=a+3\n```\nLine 4: `b=a+3` uses the wrong constant; it should be `b=a+8`.\n\nThe rest is fine."
    catch = "```python\nreturn b-9\n```\nLine 5: `return b-9` should subtract 8."
    swapped = swapped_quote_critiques(tamper, [miss, catch, miss], 5, seed=1)
    assert len(swapped) == 2                                     # one per distinct sample
    assert swapped == swapped_quote_critiques(tamper, [miss, catch, miss], 5, seed=1)          # seeded
    made_catch = next(s for s in swapped if label_critique(s, tamper["tampered"], [5, 5]).catches_bug)
    assert made_catch == ("```python\nreturn b-9\n```\nLine 5: `return b-9` uses the wrong constant; it should be "
                          "`b=a+8`.\n\nThe rest is fine.")
    made_miss = next(s for s in swapped if s != made_catch)
    labels = label_critique(made_miss, tamper["tampered"], [5, 5])
    assert (labels.catches_bug, labels.hallucinated, labels.unchanged) == (False, 0, 1)
    quote = parse_critique(made_miss).highlights[0].quote
    assert quote in ("a=x+8", "b=a+3") and made_miss.endswith(f"`{quote}` should subtract 8.")
    assert swapped_quote_critiques(tamper, [miss, catch], 1, seed=1)[0] in swapped     # at most `count`
    assert swapped_quote_critiques(tamper, ["no highlight here", ""], 3, seed=1) == []
    row = ranking_row(tamper, [miss], [made_catch])
    assert row["ranks"][row["responses"].index(made_catch)] < row["ranks"][row["responses"].index(miss)]
