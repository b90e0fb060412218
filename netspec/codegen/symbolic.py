"""Symbolic sizes for the code generator: numbers known by an expression (`Sym`), the spec's own expressions as
Python (`written_expr`, folded by `_fold`), and the checks that an expression gives every use's value
(`explains`); `substitute_names` puts a use's arguments into a class's expressions (`_collect_terms`)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netspec.expr import OPERATORS, VARIABLE, evaluate_code


class NotSymbolic(Exception):
    """A layer's constructor arguments cannot be written from symbolic sizes (it compares or branches on them)."""


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2, "/": 2, "%": 2, "**": 4}
# The operators a size expression is written with, by symbol: expr.OPERATORS's functions, so a size is
# computed here as the spec computes it.
_SYMBOLS: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Div: "/", ast.Mod: "%", ast.Pow: "**",
}  # fmt: skip
_OPS: dict[str, Callable[[Any, Any], Any]] = {symbol: OPERATORS[op] for op, symbol in _SYMBOLS.items()}


class Sym:
    """A number known by an expression while code is written: arithmetic builds the expression (and the value
    of the block use it was taken from); comparing it, or using it as an index, is not symbolic."""

    def __init__(self, expr: str, value: Any, precedence: int = 9) -> None:
        self.expr, self.value, self.precedence = expr, value, precedence

    def _wrap(self, precedence: int) -> str:
        return f"({self.expr})" if self.precedence < precedence else self.expr

    def _op(self, op: str, other: Any, right: bool = False) -> Sym:
        if not isinstance(other, (Sym, int, float)) or isinstance(other, bool):
            raise NotSymbolic(op)
        p = _PRECEDENCE[op]
        mine, theirs = self._wrap(p + int(right)), _render_operand(other, p + int(not right))
        value = (
            _OPS[op](other.value if isinstance(other, Sym) else other, self.value)
            if right
            else _OPS[op](self.value, other.value if isinstance(other, Sym) else other)
        )
        return Sym(f"{theirs} {op} {mine}" if right else f"{mine} {op} {theirs}", value, p)

    def __neg__(self) -> Sym:
        return Sym(f"-{self._wrap(3)}", -self.value, 3)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return False  # `padding == "valid"` and the like: a number is never a word
        raise NotSymbolic("==")

    def __hash__(self) -> int:
        return id(self)

    def _refuse(self, *args: Any) -> Any:
        raise NotSymbolic("comparison")

    __lt__ = __le__ = __gt__ = __ge__ = __ne__ = __bool__ = __index__ = __int__ = __float__ = _refuse

    def __repr__(self) -> str:
        return self.expr


# Sym's arithmetic, `a + b` and `2 * a` alike, one method pair per operator of _OPS.
_DUNDER_NAMES = {"+": "add", "-": "sub", "*": "mul", "//": "floordiv", "/": "truediv", "%": "mod"}
for _symbol, _name in _DUNDER_NAMES.items():
    setattr(Sym, f"__{_name}__", lambda self, o, op=_symbol: self._op(op, o))
    setattr(Sym, f"__r{_name}__", lambda self, o, op=_symbol: self._op(op, o, right=True))


def _render_operand(value: Any, precedence: int) -> str:
    if isinstance(value, Sym):
        return value._wrap(precedence)
    return repr(value) if value >= 0 else f"({value!r})"


def py_literal(value: Any) -> str:
    """repr, with strings in double quotes as the rest of the file writes them."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(py_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def render(value: Any) -> str:
    """A constructor argument as code: expressions for symbolic sizes, Python literals for the rest."""
    if isinstance(value, Sym):
        return value.expr
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(render(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return py_literal(value)


def has_sym(value: Any) -> bool:
    if isinstance(value, Sym):
        return True
    return isinstance(value, (list, tuple)) and any(has_sym(v) for v in value)


def same_value(a: Any, b: Any) -> bool:
    """Equal values of the same kind (True is not 1 here)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def explains(expr: str, envs: list[dict[str, Any]], values: list[Any]) -> bool:
    """True when `expr` gives `values[i]` in every block use's environment `envs[i]`."""
    try:
        return all(same_value(evaluate_code(expr, env), value) for env, value in zip(envs, values, strict=True))
    except (KeyError, ValueError, TypeError, ZeroDivisionError, ArithmeticError):
        return False


def written_expr(written: Any, names: set[str], constants: dict[str, Any] | None = None) -> str | None:
    """A spec expression as Python over `names` (`$out * 4` -> `out * 4`), with `constants` (the spec's
    variables, a repeat copy's `$i`) put in as numbers and folded; None if it uses anything else."""
    if not isinstance(written, str) or "$" not in written:
        return None
    constants = constants or {}
    used = set(VARIABLE.findall(written))
    if not used <= names | set(constants):
        return None
    code = VARIABLE.sub(lambda m: repr(constants[m.group(1)]) if m.group(1) in constants else m.group(1), written)
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except SyntaxError:
        return None
    return ast.unparse(_fold(tree.body))


def _fold(node: ast.AST) -> ast.AST:
    """Arithmetic on numbers done, and x + 0, x * 1, x / 1 dropped: `0.1 * (first + 0) / (18 - 1)` ->
    `0.1 * first / 17`."""
    if isinstance(node, ast.BinOp):
        left, right = _fold(node.left), _fold(node.right)
        numbers = all(isinstance(n, ast.Constant) and type(n.value) in (int, float) for n in (left, right))
        if numbers:
            try:
                value = evaluate_code(ast.unparse(ast.BinOp(left, node.op, right)), {})
            except (ArithmeticError, ValueError):
                value = None
            if value is not None:
                return ast.Constant(value)
        if isinstance(right, ast.Constant) and (
            (isinstance(node.op, (ast.Add, ast.Sub)) and right.value == 0)
            or (isinstance(node.op, (ast.Mult, ast.Div, ast.FloorDiv)) and right.value == 1)
        ):
            return left
        if isinstance(left, ast.Constant) and (
            (isinstance(node.op, ast.Add) and left.value == 0) or (isinstance(node.op, ast.Mult) and left.value == 1)
        ):
            return right
        return ast.BinOp(left, node.op, right)
    if isinstance(node, ast.UnaryOp):
        return ast.UnaryOp(node.op, _fold(node.operand))
    if isinstance(node, ast.Call):
        return ast.Call(node.func, [_fold(a) for a in node.args], node.keywords)
    return node


def substitute_names(expr: str, given: dict[str, str]) -> str | None:
    """`expr` (over a class's constructor arguments) with each argument replaced by the code a use gives it,
    sums of like terms collected (`in_channels + growth + growth` -> `in_channels + 2 * growth`)."""

    class Put(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            if node.id not in given:
                raise KeyError(node.id)
            return ast.parse(given[node.id], mode="eval").body

    try:
        tree = Put().visit(ast.parse(expr, mode="eval"))
    except (KeyError, SyntaxError):
        return None
    return _collect_terms(tree.body) or ast.unparse(tree.body)


def _collect_terms(node: ast.AST) -> str | None:
    """A sum of names and whole numbers (with whole-number factors) written with like terms collected."""
    terms: dict[str, int] = {}
    constant = 0

    def add(n: ast.AST, sign: int) -> bool:
        nonlocal constant
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub)):
            return add(n.left, sign) and add(n.right, sign if isinstance(n.op, ast.Add) else -sign)
        if isinstance(n, ast.Constant) and type(n.value) is int:
            constant += sign * n.value
            return True
        if isinstance(n, ast.Name):
            terms[n.id] = terms.get(n.id, 0) + sign
            return True
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult):
            for a, b in ((n.left, n.right), (n.right, n.left)):
                if isinstance(a, ast.Constant) and type(a.value) is int and isinstance(b, ast.Name):
                    terms[b.id] = terms.get(b.id, 0) + sign * a.value
                    return True
        return False

    if not add(node, 1):
        return None
    parts = [name if k == 1 else f"{k} * {name}" for name, k in terms.items() if k > 0]
    text = " + ".join(parts)
    for name, k in terms.items():
        if k < 0:
            text += f" - {name}" if k == -1 else f" - {-k} * {name}"
    if constant:
        text = f"{text} + {constant}" if constant > 0 and text else (f"{text} - {-constant}" if text else str(constant))
    return text or "0"


@dataclass
class Sizes:
    """Expressions for the first and the last dimension of a value inside a class (None: not expressible)."""

    first: str | None
    last: str | None
