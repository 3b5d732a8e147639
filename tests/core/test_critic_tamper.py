"""Tampering: each bug-inserting edit by hand on a small function, the reference description, and real HumanEval
problems checked in the sandbox (original passes, tampered fails), saved split by problem."""
import json
import subprocess
import sys

import pytest

from rlhf.critic.critique import gold_critique, label_critique
from rlhf.critic.dataset import load_tampers, split_by_problem
from rlhf.critic.mutations import MutationError, apply_site, find_sites
from rlhf.critic.problems import ProblemError, load_humaneval, load_problems
from rlhf.critic.tamper import TamperSettings, changed_span, check_answers, describe, tamper_problems
from rlhf.sandbox import SandboxLimits

SOURCE = '''def count_small(values, limit):
    """How many of values are below limit."""
    total = 0
    for i in range(1, len(values)):
        if values[i] < limit and values[i] != 0:
            total += 1
    return total + values[0:-1].count(0)
'''


def edits(operator):
    return [apply_site(SOURCE, "count_small", s) for s in find_sites(SOURCE, "count_small") if s.operator == operator]


def changed_line(mutation):
    return [b for a, b in zip(SOURCE.splitlines(), mutation.source.splitlines()) if a != b]


def test_each_operator_edits_one_place_and_keeps_the_rest_of_the_text():
    assert [changed_line(m) for m in edits("comparison")] == [
        ["        if values[i] <= limit and values[i] != 0:"], ["        if values[i] < limit and values[i] == 0:"]]
    assert [changed_line(m) for m in edits("off_by_one")] == [
        ["    for i in range(1, len(values) - 1):"], ["    for i in range(2, len(values)):"],
        ["    return total + values[0:-2].count(0)"], ["    return total + values[1:-1].count(0)"]]
    assert [changed_line(m) for m in edits("arithmetic")] == [
        ["            total -= 1"], ["    return total - values[0:-1].count(0)"]]
    assert [changed_line(m) for m in edits("boolean")] == [["        if values[i] < limit or values[i] != 0:"]]
    dropped_if, left_only, right_only = (m.source for m in edits("condition"))          # document order
    assert "            total += 1" not in dropped_if and "        total += 1\n" in dropped_if   # runs always
    assert "        if values[i] < limit:\n" in left_only and "        if values[i] != 0:\n" in right_only
    assert ["    total = 1"] in [changed_line(m) for m in edits("constant")]
    variables = [changed_line(m)[0] for m in edits("variable")]
    assert "    for i in range(1, len(limit)):" in variables and all("count_small" not in v for v in variables)
    assert all(m.source.count("\n") >= SOURCE.count("\n") - 1 for op in ("comparison", "variable") for m in edits(op))
    # a swapped operator keeps the spacing of the one it replaces (a changed spacing would point at the bug)
    compact = 'def f(x, y):\n    a=x+8\n    return a<y or a>=9\n'
    swapped = {apply_site(compact, "f", s).source.splitlines()[s.line - 1] for s in find_sites(compact, "f")
               if s.operator in ("arithmetic", "comparison", "boolean")}
    assert swapped == {"    a=x-8", "    return a<=y or a>=9", "    return a<y or a>9", "    return a<y and a>=9"}
    with pytest.raises(MutationError, match="does not parse"):
        find_sites("def f(:\n", "f")


def test_changed_span_and_reviewer_description():
    tampered = SOURCE.replace("range(1, len(values))", "range(2, len(values))")
    span, before, after = changed_span(SOURCE, tampered)
    assert (span, before, after) == ([4, 4], "for i in range(1, len(values)):", "for i in range(2, len(values)):")
    assert describe("off_by_one", span, before, after, "assert candidate([5, 1], 3) == 1") == (
        "Line 4: `for i in range(2, len(values)):` uses a bound that is off by one; it should be "
        "`for i in range(1, len(values)):`. As written, this test fails: `assert candidate([5, 1], 3) == 1`")
    dropped = edits("condition")[0].source
    span, before, after = changed_span(SOURCE, dropped)
    assert span == [5, 5] and describe("condition", span, before, after, "").startswith(
        "Line 5 now run unconditionally: the check `if values[i] < limit and values[i] != 0:` that guarded them is "
        "missing. As written, the tests never finish")


def test_checks_count_the_docstring_examples_and_name_each_failing_test():
    has_close = load_humaneval()[0]                    # two docstring examples, seven test statements
    toy = load_problems("toy:1")[0][0]                 # no examples, four test statements
    wrong = has_close.solution.replace("return True", "return False")
    off = toy.solution.replace("return ", "return 1+")
    checks = check_answers([(has_close, has_close.solution), (has_close, wrong), (toy, toy.solution), (toy, off)],
                           TamperSettings(limits=SandboxLimits(timeout_s=10)))
    assert [(c.passed, c.examples, c.examples_failed) for c in checks] == [(True, 2, 0), (False, 2, 1), (True, 0, 0),
                                                                           (False, 0, 0)]
    assert checks[1].failed_tests and checks[3].failed_tests == [0, 1, 2, 3]
    assert checks[0].passes_examples and not checks[1].passes_examples and not checks[2].passes_examples


def test_humaneval_tampers_fail_their_tests_and_split_by_problem(tmp_path):
    problems = load_humaneval()
    assert len(problems) == 164
    good = problems[:4]
    broken = {"task_id": "Broken/0", "prompt": "def one():\n", "entry_point": "one",
              "canonical_solution": "    return 2\n", "test": "def check(candidate):\n    assert candidate() == 1\n"}
    path = tmp_path / "problems.jsonl"
    lines = [json.dumps({"task_id": p.task_id, "prompt": p.question, "entry_point": p.entry_point,
                         "canonical_solution": p.solution[len(p.question):], "test": p.test}) for p in good]
    lines += [json.dumps(broken), "{not json", json.dumps({"task_id": "x", "prompt": "def f():\n"}),
              json.dumps({**broken, "task_id": "NoCheck/0", "test": "assert True\n"})]
    path.write_text("\n".join(lines) + "\n")
    loaded, skipped = load_problems(str(path))
    assert [p.task_id for p in loaded] == [p.task_id for p in good] + ["Broken/0"]
    assert skipped == {"skipped: record is not a JSON object": 1, "skipped: missing": 1,
                       "skipped: test defines no check(candidate)": 1}
    tampers, counts = tamper_problems(loaded, TamperSettings(max_attempts=4, limits=SandboxLimits(timeout_s=10)))
    assert counts["skipped: solution fails its tests"] == 1
    assert {t.task_id for t in tampers} == {p.task_id for p in good}        # HumanEval/0-3: one each
    for tamper in tampers:
        lines = tamper.tampered.splitlines()
        assert tamper.tampered != tamper.original
        assert tamper.tampered_snippet.splitlines()[0] == lines[tamper.changed_lines[0] - 1].strip()
        assert f"Line {tamper.changed_lines[0]}" in tamper.description
        assert tamper.failing_test and " ".join(tamper.failing_test.split())[:40] in tamper.description
        gold = gold_critique(tamper.tampered, tamper.changed_lines, tamper.description)
        assert label_critique(gold, tamper.tampered, tamper.changed_lines).catches_bug
    split = split_by_problem([f"p{i}" for i in range(10)], 0.1, 0.2, seed=0)
    assert sorted(split.values()).count("test") == 2 and sorted(split.values()).count("validation") == 1
    assert split == split_by_problem([f"p{i}" for i in reversed(range(10))], 0.1, 0.2, seed=0)
    (tmp_path / "empty.jsonl").write_text("\n{not json}\n")
    with pytest.raises(ProblemError, match=r"no usable problem \(\{'skipped: record is not a JSON object': 1\}\)"):
        load_problems(str(tmp_path / "empty.jsonl"))


def test_rlhf_critic_tamper_writes_a_dataset_split_by_problem_and_is_not_redone(tmp_path):
    command = [sys.executable, "-m", "launch.cli", "critic", "tamper", "--run.output_dir", str(tmp_path),
               "--critic.tamper.limit", "6", "--critic.tamper.max_attempts", "3",
               "--critic.tamper.validation_fraction", "0.2", "--critic.tamper.test_fraction", "0.2"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "critic-default" / "tampers"
    dataset = load_tampers(folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["counts"]["problems"] == 6 and sum(summary["splits"].values()) == summary["counts"]["tampers"] >= 5
    ids = {split: set(dataset[split]["task_id"]) for split in ("train", "validation", "test")}
    assert ids["test"] and ids["validation"] and not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"])
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "is complete; not made again" in again.stdout
    bad = subprocess.run(command[:-8] + ["--critic.tamper.problems", str(tmp_path / "missing.jsonl"),
                                         "--run.name", "other"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        f"rlhf critic: error: critic.tamper.problems: {tmp_path / 'missing.jsonl'} is not a file (nor 'humaneval')")
