"""The bundled toy code task: small generated functions whose docstring states every step, with tests computed
from the steps (no code is run to make them). Tampering one step leaves code that contradicts its docstring and
fails a test; the changed line is the hidden ground truth. Small enough for a tiny character-level model to learn
to critique, so the code is compact (no spaces around operators: a line is a few characters to quote, and two
characters of context tell the lines apart) and the docstring gives each step as the line writes it:

    def f7(x):
        \"\"\"Apply +3, then *2, then -4.\"\"\"
        a=x+3
        b=a*2
        return b-4
"""
from __future__ import annotations

import random

from rlhf.seeding import derive_seed

from .problems import CodeProblem

_OPS = {"+": lambda v, c: v + c, "-": lambda v, c: v - c, "*": lambda v, c: v * c}
_NAMES = "abcdefg"


def toy_problem(index: int, seed: int = 0, steps: int = 3) -> CodeProblem:
    """Problem `index` of the toy task (deterministic in (seed, index))."""
    rng = random.Random(derive_seed(seed, "toy_code", index))
    ops = [(rng.choice("+-*"), rng.randint(2, 9)) for _ in range(steps)]
    name = f"f{index}"
    doc = "Apply " + ", then ".join(f"{op}{c}" for op, c in ops)
    lines = [f"def {name}(x):", f'    """{doc}."""']
    previous = "x"
    for step, (op, c) in enumerate(ops):
        expression = f"{previous}{op}{c}"
        if step == steps - 1:
            lines.append(f"    return {expression}")
        else:
            lines.append(f"    {_NAMES[step]}={expression}")
            previous = _NAMES[step]
    inputs = [1, 2, 5, -3]
    asserts = [f"    assert candidate({x}) == {_evaluate(ops, x)}" for x in inputs]
    question = "\n".join(lines[:2]) + "\n"
    return CodeProblem(f"toy/{index}", question, name, "\n".join(lines) + "\n",
                       "def check(candidate):\n" + "\n".join(asserts) + "\n")


def _evaluate(ops, x: int) -> int:
    value = x
    for op, c in ops:
        value = _OPS[op](value, c)
    return value


def toy_problems(count: int, seed: int = 0) -> list[CodeProblem]:
    return [toy_problem(i, seed) for i in range(count)]
