"""Bug-inserting edits of Python source through libcst (the rest of the code keeps its exact text): every place in
one function where an operator could insert a subtle bug, and the edit at one of them.

Operators (the kinds of bugs CriticGPT's tamperers insert by hand):
  comparison   `<` <-> `<=`, `>` <-> `>=`, `==` <-> `!=`, `in` <-> `not in`, `is` <-> `is not`
  arithmetic   `+` <-> `-`, `*` -> `+`, `//` -> `/`, `%` -> `//`, and the augmented forms (`+=` <-> `-=`)
  boolean      `and` <-> `or`, a `not` dropped
  off_by_one   `range(a, b)` -> `range(a, b - 1)` / `range(a + 1, b)`; `x[i:j]` -> `x[i:j - 1]` / `x[i + 1:j]`
  variable     a variable read replaced by another local variable of the function
  condition    an `if` without `else` dropped (its body always runs); one operand of `and` / `or` dropped
  constant     an integer constant n -> n + 1 (0 -> 1), `True` <-> `False`
"""
from __future__ import annotations

from dataclasses import dataclass

import libcst as cst
from libcst.metadata import ExpressionContext, ExpressionContextProvider, MetadataWrapper, PositionProvider

OPERATORS = ("comparison", "arithmetic", "boolean", "off_by_one", "variable", "condition", "constant")

_COMPARISON_SWAPS = {cst.LessThan: cst.LessThanEqual, cst.LessThanEqual: cst.LessThan,
                     cst.GreaterThan: cst.GreaterThanEqual, cst.GreaterThanEqual: cst.GreaterThan,
                     cst.Equal: cst.NotEqual, cst.NotEqual: cst.Equal, cst.In: cst.NotIn, cst.NotIn: cst.In,
                     cst.Is: cst.IsNot, cst.IsNot: cst.Is}
_ARITHMETIC_SWAPS = {cst.Add: cst.Subtract, cst.Subtract: cst.Add, cst.Multiply: cst.Add,
                     cst.FloorDivide: cst.Divide, cst.Modulo: cst.FloorDivide}
_AUGMENTED_SWAPS = {cst.AddAssign: cst.SubtractAssign, cst.SubtractAssign: cst.AddAssign,
                    cst.MultiplyAssign: cst.AddAssign}


class MutationError(ValueError):
    """Source that cannot be mutated (does not parse, or has no function of that name), worded as one line."""


@dataclass(frozen=True)
class Site:
    operator: str
    index: int              # the n-th candidate node of this operator in the function (document order)
    line: int               # 1-based line of the node in the original source
    variant: int = 0        # which of a node's edits (e.g. the start or the stop of a range)
    replacement: str = ""   # for `variable`: the name read instead


@dataclass(frozen=True)
class Mutation:
    site: Site
    source: str             # the whole mutated source


def _plus_one(expr: cst.BaseExpression, sign: str) -> cst.BaseExpression:
    """`expr + 1` / `expr - 1`, folded into an integer literal where it is one."""
    step = 1 if sign == "+" else -1
    if isinstance(expr, cst.Integer):
        return _integer(int(expr.value, 0) + step)
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus) and \
            isinstance(expr.expression, cst.Integer):
        return _integer(-int(expr.expression.value, 0) + step)
    op = cst.Add() if sign == "+" else cst.Subtract()
    inner = expr if isinstance(expr, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) else \
        expr.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.BinaryOperation(left=inner, operator=op, right=cst.Integer("1"))


def _integer(value: int) -> cst.BaseExpression:
    return cst.Integer(str(value)) if value >= 0 else cst.UnaryOperation(cst.Minus(), cst.Integer(str(-value)))


class _Sites(cst.CSTVisitor):
    """Collects the candidate nodes of every operator inside the function `name` (its docstring excluded)."""
    METADATA_DEPENDENCIES = (PositionProvider, ExpressionContextProvider)

    def __init__(self, name: str):
        self.name, self.depth, self.found = name, 0, False
        self.nodes: dict[str, list[tuple[cst.CSTNode, int]]] = {op: [] for op in OPERATORS}
        self.locals: list[str] = []
        self.elifs: set[int] = set()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if self.depth == 0 and node.name.value == self.name:
            self.found = True
            self.locals += [p.name.value for p in node.params.params]
        if self.found:
            self.depth += 1

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        if self.depth:
            self.depth -= 1
            if self.depth == 0:
                self.found = False

    def _add(self, operator: str, node: cst.CSTNode) -> None:
        if self.depth:
            self.nodes[operator].append((node, self.get_metadata(PositionProvider, node).start.line))

    def visit_ComparisonTarget(self, node):
        if type(node.operator) in _COMPARISON_SWAPS:
            self._add("comparison", node)

    def visit_BinaryOperation(self, node):
        if type(node.operator) in _ARITHMETIC_SWAPS:
            self._add("arithmetic", node)

    def visit_AugAssign(self, node):
        if type(node.operator) in _AUGMENTED_SWAPS:
            self._add("arithmetic", node)

    def visit_BooleanOperation(self, node):
        self._add("boolean", node)
        self._add("condition", node)

    def visit_UnaryOperation(self, node):
        if isinstance(node.operator, cst.Not):
            self._add("boolean", node)

    def visit_Call(self, node):
        if isinstance(node.func, cst.Name) and node.func.value == "range" and 1 <= len(node.args) <= 3:
            self._add("off_by_one", node)

    def visit_Slice(self, node):
        if node.lower is not None or node.upper is not None:
            self._add("off_by_one", node)

    def visit_If(self, node):
        if isinstance(node.orelse, cst.If):
            self.elifs.add(id(node.orelse))           # an `elif`: dropping it would take its siblings along
        if node.orelse is None and id(node) not in self.elifs:
            self._add("condition", node)

    def visit_Integer(self, node):
        self._add("constant", node)

    def visit_Name(self, node):
        if node.value in ("True", "False"):
            self._add("constant", node)
        elif self.depth and self.get_metadata(ExpressionContextProvider, node, None) == ExpressionContext.STORE:
            if node.value not in self.locals and node.value != self.name:
                self.locals.append(node.value)
        elif self.depth and self.get_metadata(ExpressionContextProvider, node, None) == ExpressionContext.LOAD:
            self._add("variable", node)


def _variants(operator: str, node: cst.CSTNode, locals_: list[str]) -> list[tuple[int, str]]:
    """The (variant, replacement) edits a node admits."""
    if operator == "off_by_one":
        if isinstance(node, cst.Call):
            return [(0, "")] if len(node.args) == 1 else [(0, ""), (1, "")]
        return [(v, "") for v, part in enumerate((node.upper, node.lower)) if part is not None]
    if operator == "variable":
        return [(0, name) for name in locals_ if name != node.value] if node.value in locals_ else []
    if operator == "condition" and isinstance(node, cst.BooleanOperation):
        return [(0, ""), (1, "")]
    return [(0, "")]


def _spaced_like(new_operator: type, old: cst.CSTNode) -> cst.CSTNode:
    """`new_operator` with the spacing of the operator it replaces: `a=x+8` becomes `a=x-8`, not `a=x - 8` (a
    changed spacing would point at the bug)."""
    return new_operator(**{field: getattr(old, field) for field in ("whitespace_before", "whitespace_after")
                           if hasattr(old, field)})


def _edit(site: Site, node: cst.CSTNode):
    """The replacement of `node` for `site` (a node, or a FlattenSentinel of statements for a dropped `if`)."""
    op, v = site.operator, site.variant
    if op == "comparison":
        return node.with_changes(operator=_spaced_like(_COMPARISON_SWAPS[type(node.operator)], node.operator))
    if op == "arithmetic":
        swaps = _AUGMENTED_SWAPS if isinstance(node, cst.AugAssign) else _ARITHMETIC_SWAPS
        return node.with_changes(operator=_spaced_like(swaps[type(node.operator)], node.operator))
    if op == "boolean":
        if isinstance(node, cst.UnaryOperation):
            return node.expression
        return node.with_changes(operator=_spaced_like(cst.Or if isinstance(node.operator, cst.And) else cst.And,
                                                       node.operator))
    if op == "off_by_one":
        if isinstance(node, cst.Call):
            args = list(node.args)
            if v == 0:       # the stop
                stop = 0 if len(args) == 1 else 1
                args[stop] = args[stop].with_changes(value=_plus_one(args[stop].value, "-"))
            else:            # the start
                args[0] = args[0].with_changes(value=_plus_one(args[0].value, "+"))
            return node.with_changes(args=args)
        if v == 0:
            return node.with_changes(upper=_plus_one(node.upper, "-"))
        return node.with_changes(lower=_plus_one(node.lower, "+"))
    if op == "variable":
        return node.with_changes(value=site.replacement)
    if op == "condition":
        if isinstance(node, cst.If):
            body = node.body
            return cst.FlattenSentinel(list(body.body)) if isinstance(body, cst.IndentedBlock) else \
                cst.FlattenSentinel([cst.SimpleStatementLine(body=list(body.body))])
        return node.left if v == 0 else node.right
    if op == "constant":
        if isinstance(node, cst.Name):
            return node.with_changes(value="False" if node.value == "True" else "True")
        return cst.Integer(str(int(node.value, 0) + 1))
    raise ValueError(op)


class _Apply(cst.CSTTransformer):
    def __init__(self, target: cst.CSTNode, site: Site):
        self.target, self.site = target, site

    def on_leave(self, original_node, updated_node):
        if original_node is self.target:
            return _edit(self.site, updated_node)
        return updated_node


def _wrapper(source: str) -> MetadataWrapper:
    try:
        return MetadataWrapper(cst.parse_module(source))
    except cst.ParserSyntaxError as error:
        raise MutationError(f"does not parse: {str(error).splitlines()[0]}") from None


def find_sites(source: str, function: str) -> list[Site]:
    """Every single edit of every operator inside `function` of `source`, in a fixed order."""
    wrapper = _wrapper(source)
    sites = _collect(wrapper, function)
    return [site for site, _ in sites]


def _collect(wrapper: MetadataWrapper, function: str) -> list[tuple[Site, cst.CSTNode]]:
    visitor = _Sites(function)
    wrapper.visit(visitor)
    if not any(visitor.nodes.values()) and function not in wrapper.module.code:
        raise MutationError(f"has no function {function!r}")
    out = []
    for operator in OPERATORS:
        for index, (node, line) in enumerate(visitor.nodes[operator]):
            for variant, replacement in _variants(operator, node, visitor.locals):
                out.append((Site(operator, index, line, variant, replacement), node))
    return out


def apply_site(source: str, function: str, site: Site) -> Mutation:
    """`source` with the edit of `site` (as found by `find_sites` on the same source)."""
    wrapper = _wrapper(source)
    for candidate, node in _collect(wrapper, function):
        if candidate == site:
            try:
                return Mutation(site, wrapper.module.visit(_Apply(node, site)).code)
            except cst.CSTValidationError as error:     # e.g. `if not(x):` -> `if(x):` needs a space libcst wants
                raise MutationError(f"edit {site.operator} at line {site.line} makes invalid code: {error}") from None
    raise MutationError(f"no edit {site} in {function!r}")
