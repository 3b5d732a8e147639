"""Tampering: subtle bugs inserted into working code, each kept only if the original passes its tests and the
tampered code fails at least one (checked in the sandbox), with a reference description written as a code reviewer
would: where, what is wrong, what it should be, and a test that now fails. Tampers that still pass the docstring's
examples are preferred (they are the ones a quick reading misses)."""
from __future__ import annotations

import ast
import difflib
import itertools
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterator

from rlhf.sandbox import SandboxLimits, run_many
from rlhf.seeding import derive_seed

from .mutations import OPERATORS, MutationError, apply_site, find_sites
from .problems import CodeProblem, check_program, read_check

WHAT = {"comparison": "the wrong comparison operator", "arithmetic": "the wrong arithmetic operator",
        "boolean": "the wrong boolean logic", "off_by_one": "a bound that is off by one",
        "variable": "the wrong variable", "condition": "a condition that is missing part of its check",
        "constant": "the wrong constant"}


@dataclass
class TamperSettings:
    tampers_per_problem: int = 1
    max_attempts: int = 12           # candidate edits checked per problem
    seed: int = 0
    limits: SandboxLimits = field(default_factory=lambda: SandboxLimits(timeout_s=10.0))
    workers: int | None = None       # sandboxes at once (default: the CPUs)


@dataclass
class Tamper:
    task_id: str
    question: str
    entry_point: str
    original: str
    tampered: str
    operator: str
    changed_lines: list[int]         # [first, last], 1-based lines of `tampered` that differ from the original
    original_snippet: str
    tampered_snippet: str
    description: str                 # the reference: what changed, where, and a failing test
    failing_test: str                # a statement of the tests that now fails ('' when the tests never finished)
    passes_examples: bool            # the tampered code still passes the docstring examples

    def to_record(self) -> dict:
        return asdict(self)


def candidate_edits(problem: CodeProblem, seed: int) -> Iterator[tuple[str, str]]:
    """Distinct (operator, tampered source) for `problem`, each made when it is asked for (most problems need only
    their first): operators taken in turns (a seeded order), a seeded site of each, so that no operator crowds out
    the others. Raises MutationError (at the first) for a solution that cannot be mutated."""
    sites = find_sites(problem.solution, problem.entry_point)
    rng = random.Random(seed)
    by_operator = {op: [s for s in sites if s.operator == op] for op in OPERATORS}
    for group in by_operator.values():
        rng.shuffle(group)
    order = [op for op in OPERATORS if by_operator[op]]
    rng.shuffle(order)
    seen = {problem.solution}
    while any(by_operator[op] for op in order):
        for op in order:
            if by_operator[op]:
                try:
                    source = apply_site(problem.solution, problem.entry_point, by_operator[op].pop()).source
                except MutationError:
                    continue
                if source not in seen and _parses(source):
                    seen.add(source)
                    yield op, source


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
        return True
    except SyntaxError:
        return False


def changed_span(original: str, tampered: str) -> tuple[list[int], str, str]:
    """([first, last] changed lines of `tampered`, 1-based), the original lines and the tampered lines, stripped."""
    a, b = original.splitlines(), tampered.splitlines()
    removed, added, lines = [], [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
            lines += list(range(j1 + 1, j2 + 1)) or [min(j1 + 1, len(b))]
    return [min(lines), max(lines)], "\n".join(x.strip() for x in removed), "\n".join(x.strip() for x in added)


def describe(operator: str, span: list[int], before: str, after: str, failing_test: str) -> str:
    where = f"Line {span[0]}" if span[0] == span[1] else f"Lines {span[0]}-{span[1]}"
    if operator == "condition" and before.startswith("if ") and before.count("\n") >= after.count("\n"):
        first = before.splitlines()[0]
        text = f"{where} now run unconditionally: the check `{first}` that guarded them is missing."
    else:
        text = f"{where}: `{after}` uses {WHAT[operator]}; it should be `{before}`."
    if failing_test:
        test = " ".join(failing_test.split())
        test = test if len(test) <= 160 else test[:157] + "..."
        return f"{text} As written, this test fails: `{test}`"
    return f"{text} As written, the tests never finish (it loops or exhausts a limit)."


def tamper_problems(problems: list[CodeProblem], settings: TamperSettings) -> tuple[list[Tamper], Counter]:
    """Tampers for each problem whose solution passes its tests, and the counts of what was skipped and why.

    Candidate edits are checked in rounds (one more per problem each round, all problems' checks of a round in
    parallel) until a problem has `tampers_per_problem` tampers, of which, when its docstring has examples, that
    many still pass them; or its candidates run out."""
    counts: Counter = Counter(problems=len(problems))
    originals = check_answers([(p, p.solution) for p in problems], settings)
    pending = {}          # task id -> (problem, has examples, its next edit, the edits after it)
    for position, (problem, check) in enumerate(zip(problems, originals)):
        if not check.passed:
            counts["skipped: solution fails its tests"] += 1
            continue
        edits = itertools.islice(candidate_edits(problem, derive_seed(settings.seed, "tamper", position)),
                                 settings.max_attempts)
        try:
            first = next(edits, None)
        except MutationError as error:
            counts[f"skipped: solution {str(error).split(':')[0]}"] += 1
            continue
        if first is None:
            counts["skipped: no place to insert a bug"] += 1
            continue
        pending[problem.task_id] = (problem, check.examples > 0, first, edits)
    kept: dict[str, list[tuple[bool, int, Tamper]]] = {task: [] for task in pending}
    order = 0
    while pending:
        batch = [(task, problem, *edit) for task, (problem, _, edit, _) in pending.items()]
        counts["candidates checked"] += len(batch)
        for (task, problem, op, source), check in zip(batch, check_answers([(b[1], b[3]) for b in batch], settings)):
            order += 1
            if check.passed:
                counts["candidates that still pass the tests"] += 1
                continue
            span, before, after = changed_span(problem.solution, source)
            failing = problem.test_statements[check.failed_tests[0]] if check.failed_tests else ""
            tamper = Tamper(problem.task_id, problem.question, problem.entry_point, problem.solution, source, op,
                            span, before, after, describe(op, span, before, after, failing), failing,
                            check.passes_examples)
            kept[task].append((not tamper.passes_examples, order, tamper))
        for task in list(pending):
            problem, has_examples, _, edits = pending[task]
            good = [t for t in kept[task] if t[2].passes_examples or not has_examples]
            following = None if len(good) >= settings.tampers_per_problem else next(edits, None)
            if following is None:
                del pending[task]
            else:
                pending[task] = (problem, has_examples, following, edits)
    tampers = []
    for task, found in kept.items():
        chosen = sorted(found, key=lambda item: item[:2])[:settings.tampers_per_problem]
        if not chosen:
            counts["skipped: no edit made a test fail"] += 1
        tampers += [t for _, _, t in chosen]
    counts["tampers"] = len(tampers)
    counts["tampers passing the docstring examples"] = sum(t.passes_examples for t in tampers)
    return tampers, counts


def check_answers(pairs, settings: TamperSettings) -> list:
    """The CheckResult of each (problem, code) pair, checked in the sandbox `settings.workers` at a time."""
    programs = [check_program(problem, code) for problem, code in pairs]
    results = run_many([program for program, _ in programs], settings.limits, settings.workers)
    return [read_check(result, marker) for result, (_, marker) in zip(results, programs)]
