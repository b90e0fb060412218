"""The arithmetic a spec may write (`$width * 2 + 1`, `round(0.25 * $w)`, `max(8, $c // 4)`), in one place.

One walk over the parsed expression (never eval), with one operator table and one function table, read
two ways:

- `evaluate`: a spec's value, with every limit a spec is held to (finite numbers within MAX_INTEGER, no
  huge powers, division by zero and wrong argument counts worded for the person who wrote it);
- `evaluate_code`: the value of an argument expression the code generator wrote, for one block use
  (it may also hold lists, tuples, words and `==`), to check the expression against what the spec gave.

So an expression the spec accepts is one the exported code can compute the same way.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from typing import Any

# `$name` in a spec's text; Python code writes the bare name.
VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}

# Comparisons and logic, for conditions (a block's `if: "$se > 0"`) and generated code's `==`.
COMPARISONS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}

# Functions an expression may call (RegNet's `round(0.25 * $w)`, `max(8, $c // 4)`): Python's builtins of
# the same names, so the exported code calls them as they are.
FUNCTIONS: dict[str, Callable[..., Any]] = {"round": round, "min": min, "max": max, "int": int, "abs": abs}

# The largest whole number an expression may produce (or use) at any step: far beyond any width or
# count, small enough that `$a * $a` forty times over never builds a number with millions of digits.
MAX_INTEGER = 2**62
# The longest expression: a width's arithmetic is a line, never a page (and Python's parser recurses).
MAX_EXPRESSION = 500


def _checked(value: Any, text: str) -> Any:
    """`value` if it is a finite number within MAX_INTEGER, else the ValueError that says what is wrong."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INTEGER:
            raise ValueError(f"'{text}' gives a number too large ({len(str(abs(value)))} digits; the limit is 2**62)")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"'{text}' gives {'nan' if value != value else 'an infinite number'}; only finite numbers")
        return value
    raise ValueError(f"'{text}' gives {value!r}, not a real number")


class _Arithmetic:
    """The walk: numbers, names, the operators of OPERATORS and calls of FUNCTIONS. `other` takes any other
    node; a subclass says what a constant, a name and each step's result may be."""

    def __init__(self, text: str, env: dict[str, Any]) -> None:
        self.text, self.env = text, env

    def walk(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return self.walk(node.body)
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return self.binary(node.op, self.walk(node.left), self.walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](self.walk(node.operand))
        if isinstance(node, ast.Compare) and all(type(op) in COMPARISONS for op in node.ops):
            left, result = self.walk(node.left), True
            for op, comparator in zip(node.ops, node.comparators, strict=True):  # a < b < c as Python reads it
                right = self.walk(comparator)
                result = result and COMPARISONS[type(op)](left, right)
                left = right
            return result
        if isinstance(node, ast.BoolOp):
            values = [self.walk(v) for v in node.values]  # every operand checked, not short-circuited
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not self.walk(node.operand)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FUNCTIONS
            and node.args
            and not node.keywords
            and not any(isinstance(a, ast.Starred) for a in node.args)
        ):
            return self.call(node.func.id, [self.walk(a) for a in node.args])
        return self.other(node)

    def constant(self, value: Any) -> Any:
        return value

    def name(self, name: str) -> Any:
        return self.env[name]

    def binary(self, op: ast.operator, left: Any, right: Any) -> Any:
        return OPERATORS[type(op)](left, right)

    def call(self, function: str, args: list[Any]) -> Any:
        return FUNCTIONS[function](*args)

    def other(self, node: ast.AST) -> Any:
        raise ValueError(ast.dump(node))


class _SpecArithmetic(_Arithmetic):
    """Numbers only, each step within the limits, every error a message for the spec's author."""

    def __init__(self, text: str, env: dict[str, Any], unknown: Callable[[str], str]) -> None:
        super().__init__(text, env)
        self.unknown = unknown

    def constant(self, value: Any) -> Any:
        if type(value) not in (int, float, bool):
            return self._not_allowed()
        return _checked(value, self.text)

    def name(self, name: str) -> Any:
        if name not in self.env:
            raise ValueError(self.unknown(name))
        value = self.env[name]
        if type(value) not in (int, float, bool):
            raise ValueError(f"${name} is {value!r}, not a number, in '{self.text}'")
        return _checked(value, self.text)

    def binary(self, op: ast.operator, left: Any, right: Any) -> Any:
        text = self.text
        if isinstance(op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise ValueError(f"'{text}': that power is too large")
        try:
            return _checked(OPERATORS[type(op)](left, right), text)
        except ZeroDivisionError:
            raise ValueError(f"'{text}' divides by zero") from None
        except OverflowError:
            raise ValueError(f"'{text}' gives a number too large") from None

    def call(self, function: str, args: list[Any]) -> Any:
        text = self.text
        if function in ("round", "int", "abs") and len(args) != 1:
            raise ValueError(f"'{text}': {function} takes one number")
        if function in ("min", "max") and len(args) < 2:
            raise ValueError(f"'{text}': {function} takes two or more numbers, e.g. {function}(8, $c // 4)")
        try:
            return _checked(FUNCTIONS[function](*args), text)
        except OverflowError:
            raise ValueError(f"'{text}' gives a number too large (or infinite) for {function}") from None

    def other(self, node: ast.AST) -> Any:
        return self._not_allowed()

    def _not_allowed(self) -> Any:
        raise ValueError(
            f"'{self.text}': only numbers, $variables, + - * / // % **, comparisons (< <= > >= == !=), and/or/not, "
            f"brackets and {', '.join(FUNCTIONS)} are allowed"
        )


class _CodeArithmetic(_Arithmetic):
    """Any constant, and the lists and tuples a generated constructor argument may hold."""

    def other(self, node: ast.AST) -> Any:
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.walk(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        return super().other(node)


def evaluate(text: str, env: dict[str, Any], unknown: Callable[[str], str]) -> Any:
    """`$width` -> its value; `$width * 2 + 1`, `round(0.25 * $w)`, `1 - 0.9997` -> arithmetic on numbers,
    by walking the parsed expression (never eval). Raises ValueError with the message to show;
    `unknown(name)` words an unknown name."""
    whole = VARIABLE.fullmatch(text.strip())
    if whole:
        if whole.group(1) not in env:
            raise ValueError(unknown(whole.group(1)))
        return env[whole.group(1)]
    if len(text) > MAX_EXPRESSION:
        raise ValueError(f"an expression of {len(text):,} characters is too long (at most {MAX_EXPRESSION:,})")
    try:
        tree = ast.parse(VARIABLE.sub(r"\1", text).strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError(f"cannot read '{text}' as arithmetic (write e.g. $width * 2)") from None
    try:
        return _SpecArithmetic(text, env, unknown).walk(tree)
    except RecursionError:
        raise ValueError(f"'{text[:40]}...' is nested too deeply") from None


def evaluate_code(expr: str, env: dict[str, Any]) -> Any:
    """The value of a generated argument expression for one block use (numbers, names, lists, arithmetic and
    the spec's functions). Raises KeyError for an unknown name, ValueError for code it does not read."""
    return _CodeArithmetic(expr, env).walk(ast.parse(expr, mode="eval"))


def is_plain_arithmetic(text: str) -> bool:
    """True for text like `1 - 0.9997` or `round(2.5 * 8)`: numbers, operators and the allowed functions only
    (so that `same`, `relu` or `3x3` stay text)."""
    if not any(c.isdigit() for c in text) or len(text) > 200:
        return False
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return False
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Call, ast.Load, *OPERATORS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id not in FUNCTIONS:
                return False
        elif not isinstance(node, allowed) or (isinstance(node, ast.Constant) and type(node.value) not in (int, float)):
            return False
    return not isinstance(tree.body, ast.Constant)
