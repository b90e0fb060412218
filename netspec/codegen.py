"""Plain PyTorch source for a shaped network, written as a person would write it (torchvision style).

- The spec becomes one class and every block one class, whose `__init__` takes the block's
  parameters and its input size (`in_channels` or `in_features`) and whose `forward` is written
  once; a block whose body is a plain chain is an `nn.Sequential` subclass and needs no forward.
- The module tree and attribute names are the compiler's (graph.py), so the file's state_dict keys
  are netspec's and a netspec checkpoint loads with strict=True.
- Inside a block class, sizes are expressions of its parameters where the spec writes them so
  (`$out * 4` becomes `out * 4`) and of its input size where they are inferred; each expression is
  checked against every use of the block. A size that no expression explains is a constructor argument.
- Merges are the tensor expressions they are (`torch.cat([self.branch1(x), self.branch2(x)], dim=1)`),
  named taps local variables, learned tensors `nn.Parameter`s of their module.
"""

from __future__ import annotations

import ast
import inspect
import keyword
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from netspec.expr import VARIABLE, evaluate, evaluate_code
from netspec.graph import Form, Role
from netspec.layers import LayerSpec, MergeSpec, ModuleCall, argument_names, format_shape
from netspec.shapes import LayerInfo, NetShape, ShapedMerge, ShapedNode, ShapedSeq

INDENT = "    "
MAX_LINE = 110


def class_name(name: str) -> str:
    """`mobilenet_v2_small` -> `MobilenetV2Small`."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    text = "".join(w[0].upper() + w[1:] for w in words) or "Net"
    return text if text[0].isalpha() else f"Net{text}"


# --- symbolic sizes ---------------------------------------------------------------------------------


class NotSymbolic(Exception):
    """A layer's constructor arguments cannot be written from symbolic sizes (it compares or branches on them)."""


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2, "/": 2, "%": 2, "**": 4}
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv, "/": operator.truediv,
    "%": operator.mod, "**": operator.pow,
}  # fmt: skip


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

    def __add__(self, o: Any) -> Sym:
        return self._op("+", o)

    def __radd__(self, o: Any) -> Sym:
        return self._op("+", o, right=True)

    def __sub__(self, o: Any) -> Sym:
        return self._op("-", o)

    def __rsub__(self, o: Any) -> Sym:
        return self._op("-", o, right=True)

    def __mul__(self, o: Any) -> Sym:
        return self._op("*", o)

    def __rmul__(self, o: Any) -> Sym:
        return self._op("*", o, right=True)

    def __floordiv__(self, o: Any) -> Sym:
        return self._op("//", o)

    def __rfloordiv__(self, o: Any) -> Sym:
        return self._op("//", o, right=True)

    def __truediv__(self, o: Any) -> Sym:
        return self._op("/", o)

    def __mod__(self, o: Any) -> Sym:
        return self._op("%", o)

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


def _render_operand(value: Any, precedence: int) -> str:
    if isinstance(value, Sym):
        return value._wrap(precedence)
    return repr(value) if value >= 0 else f"({value!r})"


def _py(value: Any) -> str:
    """repr, with strings in double quotes as the rest of the file writes them."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def render(value: Any) -> str:
    """A constructor argument as code: expressions for symbolic sizes, Python literals for the rest."""
    if isinstance(value, Sym):
        return value.expr
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(render(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return _py(value)


def _has_sym(value: Any) -> bool:
    if isinstance(value, Sym):
        return True
    return isinstance(value, (list, tuple)) and any(_has_sym(v) for v in value)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind (True is not 1 here)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _explains(expr: str, envs: list[dict[str, Any]], values: list[Any]) -> bool:
    """True when `expr` gives `values[i]` in every block use's environment `envs[i]`."""
    try:
        return all(_same(evaluate_code(expr, env), value) for env, value in zip(envs, values, strict=True))
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


# --- the classes ------------------------------------------------------------------------------------


@dataclass
class Sizes:
    """Expressions for the first and the last dimension of a value inside a class (None: not expressible)."""

    first: str | None
    last: str | None


@dataclass
class Unit:
    """One class to write: the spec (`root`), a block (possibly one of its variants), or a repeat copy."""

    name: str
    instances: list[ShapedSeq]
    params: dict[str, Any]  # block parameters and their defaults (None: required)
    size_args: list[str] = field(default_factory=list)  # in_channels / in_features, when used
    out_sizes: Sizes | None = None  # its output's sizes as expressions of its constructor arguments
    extra_args: list[tuple[str, list[Any]]] = field(default_factory=list)  # sizes no expression explains
    # A residual shortcut that is the identity in some uses: (branch attr, condition) -> written as a conditional.
    optional: dict[str, str] = field(default_factory=dict)

    @property
    def chain(self) -> bool:
        """True when the class is an nn.Sequential subclass: a plain chain of modules."""
        seq = self.instances[0]
        return all(s is None for s in seq.sources) and all(
            isinstance(c, ShapedSeq) or (isinstance(c, LayerInfo) and not c.is_tensor) for c in seq.children
        )

    def envs(self) -> list[dict[str, Any]]:
        return [self.env(i) for i in range(len(self.instances))]

    def env(self, i: int) -> dict[str, Any]:
        seq = self.instances[i]
        values = dict(seq.block.args) if seq.block is not None else {}
        shape = seq.input_shape
        values["in_channels"], values["in_features"] = shape[0], shape[-1]
        for name, per_use in self.extra_args:
            values[name] = per_use[i]
        return values


def _repeat_of(node: ShapedSeq) -> str | None:
    """The block a repeat's every copy is one use of, if so (written as a loop over a class)."""
    if node.form != Form.REPEAT or not node.children:
        return None
    names = {
        c.children[0].block.name
        if c.form == Form.SINGLE and isinstance(c.children[0], ShapedSeq) and c.children[0].block
        else None
        for c in node.children
    }
    return next(iter(names)) if len(names) == 1 and None not in names else None  # type: ignore[return-value]


def _skeleton(node: ShapedNode, loose: frozenset[str] = frozenset(), loops: bool = True) -> Any:
    """What must agree for two block uses to share one class (names, kinds, wiring; not sizes). Branches named
    in `loose` may be empty in one use and a module in another; with `loops`, a repeat of one block's uses is
    a loop whose length may differ."""
    if isinstance(node, LayerInfo):
        return ("layer", node.attr, "tensor" if node.is_tensor else node.kind)
    if isinstance(node, ShapedMerge):
        branches = tuple(
            ("loose", name) if name in loose else _skeleton(b, loose, loops)
            for b, name in zip(node.branches, node.names, strict=True)
        )
        return ("merge", node.info.kind, tuple(sorted(node.info.layer.args().items())), branches)
    looped = _repeat_of(node) if loops else None
    if looped is not None:
        return ("loop", node.attr, looped, str(node.times_written))
    inner = tuple(_skeleton(c, loose, loops) for c in node.children)
    block = node.block.name if node.block is not None and node.role != Role.ROOT else None
    return (node.form, node.attr, block, tuple(node.sources), tuple(node.names), inner)


def _unit_skeleton(seq: ShapedSeq, loose: frozenset[str] = frozenset(), loops: bool = True) -> Any:
    return tuple(_skeleton(c, loose, loops) for c in seq.children), tuple(seq.sources)


class _Replan(Exception):
    """A loop or a conditional shortcut in a block class cannot be written for all its uses: plan that block
    again without it (explicit copies, or one class per variant)."""

    def __init__(self, block: str, what: str) -> None:
        super().__init__(block)
        self.block, self.what = block, what


def _collect_scopes(node: ShapedNode, found: list[ShapedSeq]) -> None:
    """Every block use and every repeat copy that is a scope, in reading order."""
    if isinstance(node, ShapedMerge):
        for branch in node.branches:
            _collect_scopes(branch, found)
        return
    if not isinstance(node, ShapedSeq):
        return
    if (node.role in (Role.BLOCK, Role.COPY) and node.form == Form.SCOPE) or node.role == Role.BLOCK:
        found.append(node)
    for child in node.children:
        _collect_scopes(child, found)


def _optional_branches(seq: ShapedSeq) -> dict[str, ShapedSeq]:
    """The shortcut branches of a scope's residuals (the ones that may be the identity in some uses)."""
    found = {}
    for child in seq.children:
        if isinstance(child, ShapedMerge) and child.info.kind == "residual":
            found[child.names[1]] = child.branches[1]
    return found


class Writer:
    """Writes the whole file: units (classes) in dependency order, then the network's class."""

    def __init__(self, net: NetShape, strict: set[tuple[str, str]] | None = None) -> None:
        self.net = net
        # (block, "loops" or "optional"): blocks whose repeats are written copy by copy, or whose shortcut
        # variants are separate classes
        self.strict = strict or set()
        self.helpers: dict[type, str] = {}  # netspec-defined modules: their source goes into the file
        self.imports: dict[str, set[str]] = {}  # `from X import Y` lines (torchvision's modules)
        self.units: dict[int, Unit] = {}  # id(scope) -> its class
        self.order: list[Unit] = []
        self._plan()

    # -- which classes --

    def _plan(self) -> None:
        scopes: list[ShapedSeq] = []
        for child in self.net.root.children:
            _collect_scopes(child, scopes)
        groups: dict[Any, list[ShapedSeq]] = {}
        for scope in scopes:
            key = scope.block.name if scope.block is not None else ("copy", _unit_skeleton(scope, loops=False))
            groups.setdefault(key, []).append(scope)
        taken: set[str] = {class_name(self.net.name)}
        for key, members in groups.items():
            for variant, (instances, optional) in enumerate(self._variants(members)):
                base = class_name(key) if isinstance(key, str) else "RepeatUnit"
                name = base if variant == 0 else f"{base}{variant + 1}"
                while name in taken or name in dir(nn):
                    name += "_"
                taken.add(name)
                block = instances[0].block
                params = dict(self._block_params(block.name)) if block is not None else {}
                unit = Unit(name, instances, params, optional=optional)
                for scope in instances:
                    self.units[id(scope)] = unit
        # Classes are written after the classes they use: walk the tree bottom-up.
        seen: set[int] = set()

        def visit(node: ShapedNode) -> None:
            if isinstance(node, ShapedMerge):
                for b in node.branches:
                    visit(b)
                return
            if isinstance(node, ShapedSeq):
                for c in node.children:
                    visit(c)
                unit = self.units.get(id(node))
                if unit is not None and id(unit) not in seen:
                    seen.add(id(unit))
                    self.order.append(unit)

        visit(self.net.root)

    def _block_params(self, name: str) -> dict[str, Any]:
        """A block's parameters and their defaults, with the spec's variables in defaults put in."""
        params = {}
        for key, default in self.net.spec.blocks[name].params.items():
            if isinstance(default, str) and "$" in default:
                try:
                    default = evaluate(default, dict(self.net.spec.vars), lambda n: n)
                except ValueError:
                    default = None
            params[key] = default
        return params

    def _variants(self, members: list[ShapedSeq]) -> list[tuple[list[ShapedSeq], dict[str, str]]]:
        """Uses of one block grouped by structure; two groups that differ only in whether a residual shortcut is
        the identity become one class with a conditional shortcut when a parameter tells them apart."""
        groups: dict[Any, list[ShapedSeq]] = {}
        block = members[0].block
        loops = block is None or (block.name, "loops") not in self.strict
        for scope in members:
            groups.setdefault(_unit_skeleton(scope, loops=loops), []).append(scope)
        variants = [(g, {}) for g in groups.values()]
        if len(variants) == 2 and block is not None and (block.name, "optional") not in self.strict:
            shortcuts = _optional_branches(members[0])
            loose = frozenset(shortcuts)
            a, b = (g for g, _ in variants)
            if loose and _unit_skeleton(a[0], loose, loops) == _unit_skeleton(b[0], loose, loops):
                condition = self._condition(a, b, next(iter(shortcuts)))
                if condition is not None:
                    ordered = sorted([*a, *b], key=members.index)
                    return [(ordered, {next(iter(shortcuts)): condition})]
        return variants

    def _condition(self, a: list[ShapedSeq], b: list[ShapedSeq], branch: str) -> str | None:
        """A test on one block parameter that is true exactly for the uses whose `branch` is a module."""

        def has_module(scope: ShapedSeq) -> bool:
            return any(
                isinstance(c, ShapedMerge)
                and branch in c.names
                and c.branches[c.names.index(branch)].form != Form.EMPTY
                for c in scope.children
            )

        with_module = [s for s in [*a, *b] if has_module(s)]
        without = [s for s in [*a, *b] if not has_module(s)]
        block = a[0].block
        if block is None:
            return None
        defaults = self._block_params(block.name)
        # An explicit choice (a word like `shortcut: projection`) reads best, then flags, then numbers.
        for param in sorted(
            block.args, key=lambda p: (not isinstance(block.args[p], str), not isinstance(block.args[p], bool))
        ):
            yes = {_py(s.block.args[param]) for s in with_module}  # type: ignore[union-attr]
            no = {_py(s.block.args[param]) for s in without}  # type: ignore[union-attr]
            if yes & no:
                continue
            if no == {_py(defaults.get(param))}:
                return f"{param} != {next(iter(no))}"
            if len(yes) == 1:
                return f"{param} == {next(iter(yes))}"
            if len(no) == 1:
                return f"{param} != {next(iter(no))}"
        return None

    # -- module expressions --

    def module_class(self, cls: type[nn.Module]) -> str:
        """How the file names a module class: nn.X, an import from torchvision, or a helper class in the file."""
        if cls.__module__.startswith("torch.nn"):
            return f"nn.{cls.__name__}"
        if cls.__module__.startswith("torchvision"):
            self.imports.setdefault(cls.__module__, set()).add(cls.__name__)
            return cls.__name__
        name = cls.__name__.removesuffix("Module")
        if cls not in self.helpers:
            source = inspect.getsource(cls).replace(f"class {cls.__name__}(", f"class {name}(", 1)
            self.helpers[cls] = source
        return name

    def call(self, call: ModuleCall, slots: list[str] | None = None) -> str:
        """`nn.Conv2d(1, 6, 5, padding=2)`: required arguments by position, the rest by name, torch's defaults
        left out. `slots` replaces the rendering of each argument (in the order the signature lists them)."""
        cls = call.cls
        qualname = self.module_class(cls)
        signature = inspect.signature(cls.__init__)
        bound = signature.bind(None, *call.args, **call.kwargs).arguments
        parts, k = [], 0
        for p in list(signature.parameters.values())[1:]:
            if p.name not in bound:
                continue
            value = bound[p.name]
            text = slots[k] if slots is not None else render(value)
            k += 1
            if p.default is not inspect.Parameter.empty:
                if not _has_sym(value) and type(value) is type(p.default) and value == p.default and text == _py(value):
                    continue
                parts.append(f"{p.name}={text}")
            else:
                parts.append(text)
        return f"{qualname}({', '.join(parts)})"

    # -- one class --

    def write_unit(self, unit: Unit) -> list[str]:
        scope = _Scope(self, unit)
        scope.walk()
        signature = ["self"]
        for name in unit.size_args:
            signature.append(f"{name}: int")
        for name, _ in unit.extra_args:
            signature.append(f"{name}: int")
        required = [(k, v) for k, v in unit.params.items() if v is None]
        optional = [(k, v) for k, v in unit.params.items() if v is not None]
        hints = {k: type(unit.instances[0].block.args[k]).__name__ for k in unit.params} if unit.params else {}
        signature += [f"{k}: {hints[k]}" for k, _ in required]
        signature += [f"{k}: {hints[k]} = {_py(v)}" for k, v in optional]
        base = "nn.Sequential" if unit.chain else "nn.Module"
        lines = [f"class {unit.name}({base}):"]
        doc = self._docstring(unit)
        if doc:
            lines.append(f'{INDENT}"""{doc}"""')
            lines.append("")
        head = f"{INDENT}def __init__({', '.join(signature)}) -> None:"
        if len(head) <= MAX_LINE:
            lines.append(head)
        else:  # as ruff format wraps it
            lines += [f"{INDENT}def __init__(", f"{INDENT * 2}{', '.join(signature)}", f"{INDENT}) -> None:"]
        lines.append(f"{INDENT * 2}super().__init__()")
        lines += [INDENT * 2 + line for line in scope.init]
        if not unit.chain:
            lines += ["", f"{INDENT}def forward(self, x: torch.Tensor) -> torch.Tensor:"]
            lines += [INDENT * 2 + line for line in scope.forward]
        return lines

    def _docstring(self, unit: Unit) -> str:
        seq = unit.instances[0]
        if seq.role == Role.ROOT:
            return ""
        if seq.block is not None:
            return f"The spec's block `{seq.block.name}` ({len(unit.instances)} use{'s' * (len(unit.instances) > 1)})."
        return "One copy of a repeat."

    def unit_call(
        self, scope: ShapedSeq, outer: _Scope | None, parallel: list[ShapedSeq], sizes: Sizes
    ) -> tuple[str, dict[str, str]]:
        """`BasicBlock(64, 128, stride=2)`: a use of a unit's class, with arguments as the enclosing class sees
        them (`parallel`: the same use in every instance of the enclosing class; `sizes`: its input's sizes),
        and the code given for each of the class's arguments."""
        unit = self.units[id(scope)]
        given: dict[str, str] = {}
        positional: list[str] = []
        for name in unit.size_args:
            values = [p.input_shape[0] if name == "in_channels" else p.input_shape[-1] for p in parallel]
            given[name] = outer.size(values, sizes) if outer is not None else _py(values[0])
            positional.append(given[name])
        for name, per_use in unit.extra_args:
            values = [per_use[unit.instances.index(p)] for p in parallel]
            given[name] = outer.value(values) if outer is not None else _py(values[0])
            positional.append(given[name])
        keywords: list[str] = []
        for name, default in unit.params.items():
            values = [p.block.args[name] for p in parallel]  # type: ignore[union-attr]
            written = scope.block.written.get(name) if scope.block and scope.block.written else None
            given[name] = text = outer.value(values, written) if outer is not None else _py(values[0])
            if default is None:
                positional.append(text)
            elif text != _py(default):
                keywords.append(f"{name}={text}")
        return f"{unit.name}({', '.join([*positional, *keywords])})", given


class _Scope:
    """Writes `__init__` and `forward` of one class, resolving sizes against every instance of it."""

    def __init__(self, writer: Writer, unit: Unit) -> None:
        self.writer, self.unit = writer, unit
        self.instances = unit.instances
        self.symbolic = len(unit.instances) > 1 or unit.instances[0].role != Role.ROOT
        self.init: list[str] = []
        self.forward: list[str] = []
        self.used_sizes: set[str] = set()
        self.names: set[str] = {"x", "self", "torch", "nn", "F"}
        self.only: list[int] | None = None  # the instances being resolved, when not all
        self.constants: dict[str, Any] = dict(writer.net.spec.vars)  # plus $i and $n inside a repeat's copy

    # -- sizes and values --

    def envs(self) -> list[dict[str, Any]]:
        envs = self.unit.envs()
        return envs if self.only is None else [envs[i] for i in self.only]

    def params(self) -> set[str]:
        return set(self.unit.params)

    def resolve(self, values: list[Any], candidates: list[str | None], emitted: bool = True) -> str | None:
        """The first candidate expression that gives `values` in every instance; `emitted`: it goes into the
        code (so the sizes it names become constructor arguments), rather than only tracking a size."""
        envs = self.envs()
        for candidate in candidates:
            if candidate is not None and _explains(candidate, envs, values):
                if emitted:
                    self.mark(candidate)
                return candidate
        return None

    def mark(self, code: str) -> None:
        for name in ("in_channels", "in_features"):
            if re.search(rf"\b{name}\b", code):
                self.used_sizes.add(name)

    def size(self, values: list[Any], sizes: Sizes) -> str:
        """An input size of a nested class, as an expression of this class's sizes and parameters."""
        if not self.symbolic:
            return _py(values[0])
        found = self.resolve(values, [sizes.first, sizes.last, "in_channels", "in_features", *sorted(self.params())])
        return found if found is not None else self.value(values, hint="size")

    def value(self, values: list[Any], written: Any = None, hint: str = "size") -> str:
        """A value that may differ between instances: the spec's own expression, a parameter, a literal if it is
        the same everywhere, or else a new constructor argument."""
        if not self.symbolic:
            return _py(values[0])
        expr = written_expr(written, self.params(), self.constants)
        if expr is not None and _explains(expr, self.envs(), values):
            return expr
        if all(_same(v, values[0]) for v in values) and (not isinstance(written, str) or not self.symbolic):
            return _py(values[0])
        found = self.resolve(values, sorted(self.params()))
        if found is not None:
            return found
        if all(_same(v, values[0]) for v in values):
            return _py(values[0])
        if self.only is not None:
            raise NotSymbolic(f"{hint} differs between the uses of {self.unit.name}")
        name = self._extra_name(hint)
        self.unit.extra_args.append((name, list(values)))
        return name

    def _extra_name(self, hint: str) -> str:
        taken = {n for n, _ in self.unit.extra_args} | set(self.unit.params) | {"in_channels", "in_features"}
        base = re.sub(r"\W", "_", hint)
        name, k = base, 2
        while name in taken:
            name, k = f"{base}{k}", k + 1
        return name

    def layer_call(self, infos: list[LayerInfo], sizes: Sizes) -> tuple[str, Sizes]:
        """A layer's constructor as code, and the sizes of its output."""
        template = infos[0]
        calls = [i.layer.module_call(i.input_shape) for i in infos]  # type: ignore[union-attr]
        if not self.symbolic:
            return self.writer.call(calls[0]), sizes
        layer = template.layer
        assert isinstance(layer, LayerSpec)
        written = template.written or {}
        fields: dict[str, Any] = {}
        for name in argument_names(type(layer)):
            value = getattr(layer, name)
            expr = written_expr(written.get(name), self.params(), self.constants)
            fields[name] = Sym(expr, value) if expr is not None else value
        shape: list[Any] = list(template.input_shape)
        if sizes.last is not None:
            shape[-1] = Sym(sizes.last, shape[-1])
        if sizes.first is not None and (len(shape) > 1 or sizes.last is None):
            shape[0] = Sym(sizes.first, shape[0])
        try:
            symbolic = type(layer).model_construct(**{**layer.model_dump(), **fields}).module_call(tuple(shape))
            sym_values = _call_values(symbolic)
        except (NotSymbolic, TypeError, ValueError, AttributeError):
            symbolic, sym_values = None, None
        per_instance = [_call_values(c) for c in calls]
        names = _call_names(calls[0])
        slots = []
        for k, template_value in enumerate(per_instance[0]):
            values = [v[k] for v in per_instance]
            candidate = sym_values[k] if sym_values is not None and k < len(sym_values) else template_value
            if _has_sym(candidate) and _explains(render(candidate), self.envs(), values):
                self.mark(render(candidate))
                slots.append(render(candidate))
            elif (
                template.written is None
                and isinstance(values[0], int)
                and not isinstance(values[0], bool)
                and (found := self.resolve(values, sorted(self.params())))
            ):
                slots.append(found)  # a layer netspec derived (an automatic shortcut): say where its sizes come from
            elif all(_same(v, values[0]) for v in values):
                slots.append(render(template_value) if not _has_sym(template_value) else _py(values[0]))
            else:
                size_candidates = [sizes.first, sizes.last] if isinstance(values[0], int) else []
                found = self.resolve(values, size_candidates)
                hint = f"{template.attr or template.kind}_{names[k]}"
                slots.append(found if found is not None else self.value(values, hint=hint))
        code = self.writer.call(calls[0], slots)
        # The output's sizes: one of the layer's own written expressions (out_channels: $out), or unchanged.
        outs = [i.output_shape for i in infos]
        own = [v.expr for v in fields.values() if isinstance(v, Sym)]
        options = [*own, sizes.first, sizes.last, *(s for s in slots if s and not s[0].isdigit())]
        first = self.resolve([o[0] for o in outs], options, emitted=False)
        last = self.resolve([o[-1] for o in outs], options, emitted=False)
        return code, Sizes(first, last)

    # -- the walk: attributes in __init__, statements in forward --

    def walk(self) -> None:
        sizes = Sizes("in_channels", "in_features") if self.symbolic else Sizes(None, None)
        final, out = self.seq(self.instances, "x", sizes, "x")
        self.unit.out_sizes = out
        if not self.unit.chain:
            last = self.forward[-1] if self.forward else ""
            if final == "x" and last.startswith("x = "):
                self.forward[-1] = "return " + last[len("x = ") :]
            else:
                self.forward.append(f"return {final}")
        # Only the sizes some expression uses become constructor arguments.
        self.unit.size_args = [n for n in ("in_channels", "in_features") if n in self.used_sizes]

    def seq(self, seqs: list[ShapedSeq], source: str, sizes: Sizes, target: str) -> tuple[str, Sizes]:
        """Statements computing a sequence from the variable `source` into `target` (taps get names of their
        own); returns the variable holding its output and that output's sizes."""
        template = seqs[0]
        read_later = {j for s in template.sources if s is not None for j in s}
        if 0 in read_later and source == target:  # `from: input` reads the sequence's input after `target` changes
            kept = self._fresh("inputs")
            self.forward.append(f"{kept} = {source}")
            source = kept
        values = [(source, sizes)]
        for k, child in enumerate(template.children):
            parallel = [s.children[k] for s in seqs]
            src = template.sources[k]
            inputs = [values[-1]] if src is None else [values[j] for j in src]
            expr, out_sizes = self.node(parallel, inputs)
            name = self._fresh(template.names[k] or f"t{k + 1}") if k + 1 in read_later else target
            self._statement(f"{name} = {expr}", _output_shape(child))
            values.append((name, out_sizes))
        return values[-1]

    def _statement(self, line: str, shape: tuple[int, ...] | None) -> None:
        comment = f"  # {format_shape(shape)}" if shape is not None and not self.symbolic else ""
        self.forward.append(line + comment)

    def _fresh(self, hint: str) -> str:
        base = re.sub(r"\W", "_", hint) or "t"
        base = f"{base}_" if keyword.iskeyword(base) else base
        name, n = base, 2
        while name in self.names:
            name, n = f"{base}_{n}", n + 1
        self.names.add(name)
        return name

    def attribute(self, attr: str, code: str, shape: tuple[int, ...] | None) -> None:
        comment = f"  # {format_shape(shape)}" if shape is not None and not self.symbolic else ""
        first = f"self.{attr} = {code}"
        if len(first) + len(comment) + 8 <= MAX_LINE or not code.startswith("nn.Sequential("):
            self.init.append(first + comment)
            return
        items = _split_args(code[len("nn.Sequential(") : -1])
        self.init.append(f"self.{attr} = nn.Sequential({comment}")
        self.init += [f"{INDENT}{item}," for item in items]
        self.init.append(")")

    def node(self, parallel: list[ShapedNode], inputs: list[tuple[str, Sizes]]) -> tuple[str, Sizes]:
        """Registers the node's attributes; returns the expression computing its output from `inputs`."""
        template = parallel[0]
        source, sizes = inputs[0]
        if isinstance(template, ShapedMerge):
            return self.merge(parallel, inputs)  # type: ignore[arg-type]
        if isinstance(template, LayerInfo) and template.is_tensor:
            self.tensor(template)
            dims = ", ".join(["-1"] * len(template.output_shape))
            return f"self.{template.attr}.expand({source}.shape[0], {dims})", sizes
        code, out_sizes = self.module(parallel, sizes)
        self.attribute(str(template.attr), code, _output_shape(template))
        return f"self.{template.attr}({source})", out_sizes

    def tensor(self, info: LayerInfo) -> None:
        """A learned tensor: an nn.Parameter of this class, initialized as the spec says."""
        layer = info.layer
        stored: list[Any] = list(layer.stored_shape())  # type: ignore[union-attr]
        if self.symbolic:
            written = (info.written or {}).get("shape")
            if isinstance(written, list):
                exprs = [written_expr(w, self.params(), self.constants) for w in written]
                offset = len(stored) - len(exprs)
                for k, expr in enumerate(exprs):
                    if expr is not None:
                        stored[offset + k] = Sym(expr, stored[offset + k])
        shape = ", ".join(render(d) for d in stored)
        init = {
            "zeros": f"torch.zeros({shape})",
            "ones": f"torch.ones({shape})",
            "constant": f"torch.full(({shape}{',' if len(stored) == 1 else ''}), {layer.value!r})",  # type: ignore[union-attr]
            "normal": f"torch.randn({shape}) * {layer.std!r}",  # type: ignore[union-attr]
            "trunc_normal": f"nn.init.trunc_normal_(torch.empty({shape}), std={layer.std!r})",  # type: ignore[union-attr]
            "uniform": f"torch.rand({shape})",
        }[layer.init]  # type: ignore[union-attr]
        self.init.append(f"self.{info.attr} = nn.Parameter({init})")

    def module(self, parallel: list[ShapedNode], sizes: Sizes) -> tuple[str, Sizes]:
        """The constructor expression of a node that is one module (layer, block use, repeat, chain, copy)."""
        template = parallel[0]
        if isinstance(template, LayerInfo):
            return self.layer_call(parallel, sizes)  # type: ignore[arg-type]
        assert isinstance(template, ShapedSeq)
        if id(template) in self.writer.units:
            outs = [_output_shape(p) for p in parallel]
            unit = self.writer.units[id(template)]
            code, given = self.writer.unit_call(template, self if self.symbolic else None, parallel, sizes)  # type: ignore[arg-type]
            known = unit.out_sizes or Sizes(None, None)
            through = [substitute_names(e, given) if e else None for e in (known.first, known.last)]
            return code, self._out_sizes(outs, sizes, through)
        if template.form == Form.SINGLE:
            return self.module([p.children[0] for p in parallel], sizes)  # type: ignore[union-attr]
        if template.form == Form.EMPTY:
            return "nn.Identity()", sizes
        if template.form == Form.REPEAT and _repeat_of(template) is not None:
            loop = self.loop(parallel, sizes)  # type: ignore[arg-type]
            if loop is not None:
                return loop
            unit = self.instances[0].block
            if self.symbolic and unit is not None and (unit.name, "loops") not in self.writer.strict:
                raise _Replan(unit.name, "loops")
        # REPEAT (copies in order) and SEQUENTIAL (children in order): each item sees the previous item's output.
        items = []
        saved = dict(self.constants)
        for k in range(len(template.children)):
            if template.form == Form.REPEAT:
                self.constants.update(i=k, n=len(template.children))
            code, sizes = self.module([p.children[k] for p in parallel], sizes)  # type: ignore[union-attr]
            items.append(code)
        self.constants = saved
        return f"nn.Sequential({', '.join(items)})", sizes

    def loop(self, repeats: list[ShapedSeq], sizes: Sizes) -> tuple[str, Sizes] | None:
        """`nn.Sequential(*[Block(...) for i in range(depth)])` for a repeat whose copies are uses of one class,
        each argument an expression of this class's parameters and the copy's index `i`; None if one is not."""
        rows = [(n, k, copy.children[0]) for n, rep in enumerate(repeats) for k, copy in enumerate(rep.children)]
        uses = [use for _, _, use in rows]
        units = {id(self.writer.units.get(id(use))) for use in uses}
        if len(units) != 1 or id(uses[0]) not in self.writer.units:
            return None
        unit = self.writer.units[id(uses[0])]
        base = self.envs() if self.symbolic else [{}]
        envs = [{**base[n], "i": k, "n": len(repeats[n].children)} for n, k, _ in rows]
        names = self.params() | {"i", "n"}

        def explain(values: list[Any], candidates: list[str | None]) -> str | None:
            return next((c for c in candidates if c is not None and _explains(c, envs, values)), None)

        counts = [len(r.children) for r in repeats]
        times = written_expr(repeats[0].times_written, self.params(), dict(self.writer.net.spec.vars))
        times = times if times is not None and _explains(times, base, counts) else None
        if times is None and len(set(counts)) == 1:
            times = str(counts[0])
        if times is None:
            return None
        args: list[str] = []
        for name in unit.size_args:
            values = [u.input_shape[0] if name == "in_channels" else u.input_shape[-1] for u in uses]
            firsts = [sizes.first, sizes.last, "in_channels", "in_features", *sorted(self.params())]
            candidates = [*firsts, *(f"{a} + i * {b}" for a in firsts[:4] if a for b in sorted(self.params()))]
            found = explain(values, candidates if self.symbolic else [])
            if found is None and len(set(values)) == 1:
                found = _py(values[0])
            if found is None:
                return None
            args.append(found)
        if unit.extra_args:
            return None
        keywords: list[str] = []
        written = uses[0].block.written or {}  # type: ignore[union-attr]
        for name, default in unit.params.items():
            values = [u.block.args[name] for u in uses]  # type: ignore[union-attr]
            expr = written_expr(written.get(name), names, dict(self.writer.net.spec.vars))
            found = expr if expr is not None and _explains(expr, envs, values) else None
            if found is None and all(_same(v, values[0]) for v in values):
                found = _py(values[0])
            if found is None and self.symbolic:
                found = explain(values, sorted(self.params()))
            if found is None:
                return None
            if default is None:
                args.append(found)
            elif found != _py(default):
                keywords.append(f"{name}={found}")
        for code in [*args, *keywords]:
            self.mark(code)
        index = "i" if any(re.search(r"\bi\b", a) for a in [*args, *keywords]) else "_"
        call = f"{unit.name}({', '.join([*args, *keywords])})"
        outs = [_output_shape(r) for r in repeats]
        return f"nn.Sequential(*[{call} for {index} in range({times})])", self._out_sizes(outs, sizes)

    def _out_sizes(
        self, outs: list[tuple[int, ...] | None], sizes: Sizes, through: list[str | None] | None = None
    ) -> Sizes:
        if not self.symbolic or any(o is None for o in outs):
            return Sizes(None, None)
        options = [*(through or []), sizes.first, sizes.last, *sorted(self.params())]
        firsts = [o[0] for o in outs]  # type: ignore[index]
        lasts = [o[-1] for o in outs]  # type: ignore[index]
        return Sizes(self.resolve(firsts, options, emitted=False), self.resolve(lasts, options, emitted=False))

    def merge(self, merges: list[ShapedMerge], inputs: list[tuple[str, Sizes]]) -> tuple[str, Sizes]:
        template = merges[0]
        op = template.info.layer
        assert isinstance(op, MergeSpec)
        terms: list[str] = []
        branch_sizes: list[Sizes] = []
        for b, (branch, name) in enumerate(zip(template.branches, template.names, strict=True)):
            parallel = [m.branches[b] for m in merges]
            source, sizes = inputs[b] if len(inputs) > 1 else inputs[0]
            condition = self.unit.optional.get(name)
            if condition is not None:  # a shortcut that is the identity in some uses
                uses = [i for i, p in enumerate(parallel) if p.form != Form.EMPTY]
                self.only = uses
                try:
                    code, _ = self.module([parallel[i].children[0] for i in uses], sizes)
                except NotSymbolic:
                    raise _Replan(self.instances[0].block.name, "optional") from None  # type: ignore[union-attr]
                finally:
                    self.only = None
                self.init.append(f"self.{name} = {code} if {condition} else nn.Identity()")
                terms.append(f"self.{name}({source})")
                branch_sizes.append(sizes)
            elif branch.form == Form.EMPTY:
                terms.append(source)
                branch_sizes.append(sizes)
            elif branch.form == Form.SINGLE:
                only = [p.children[0] for p in parallel]
                first = only[0]
                if isinstance(first, LayerInfo) and first.is_tensor and op.kind != "concat":
                    self.tensor(first)
                    terms.append(f"self.{first.attr}")  # broadcasts against the batch in + and *
                    branch_sizes.append(Sizes(None, None))
                    continue
                expr, out = self.node(only, [(source, sizes)])
                terms.append(expr)
                branch_sizes.append(out)
            elif branch.form == Form.SEQUENTIAL:
                code, out = self.module(parallel, sizes)  # type: ignore[arg-type]
                self.attribute(str(branch.attr), code, None)
                terms.append(f"self.{branch.attr}({source})")
                branch_sizes.append(out)
            else:
                assert branch.form == Form.FLAT
                var, out = self.seq(parallel, source, sizes, self._fresh(name))
                terms.append(var)
                branch_sizes.append(out)
        outs = [m.info.output_shape for m in merges]
        options: list[str | None] = [branch_sizes[0].first, branch_sizes[0].last]
        if op.kind == "concat":
            for picked in ([s.first for s in branch_sizes], [s.last for s in branch_sizes]):
                if all(picked):
                    options.append(" + ".join(f"({f})" if " " in f else f for f in picked))  # type: ignore[operator]
        out_sizes = Sizes(None, None)
        if self.symbolic:
            firsts, lasts = [o[0] for o in outs], [o[-1] for o in outs]
            out_sizes = Sizes(self.resolve(firsts, options, emitted=False), self.resolve(lasts, options, emitted=False))
        return op.code(terms), out_sizes


def _output_shape(node: ShapedNode) -> tuple[int, ...] | None:
    if isinstance(node, LayerInfo):
        return node.output_shape
    if isinstance(node, ShapedMerge):
        return node.info.output_shape
    return _output_shape(node.children[-1]) if node.children else None


def _call_values(call: ModuleCall) -> list[Any]:
    """A module call's arguments in the order its signature lists them."""
    signature = inspect.signature(call.cls.__init__)
    bound = signature.bind(None, *call.args, **call.kwargs).arguments
    return [bound[p.name] for p in list(signature.parameters.values())[1:] if p.name in bound]


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


def _call_names(call: ModuleCall) -> list[str]:
    """The names of a module call's arguments, in the order `_call_values` lists them."""
    signature = inspect.signature(call.cls.__init__)
    bound = signature.bind(None, *call.args, **call.kwargs).arguments
    return [p.name for p in list(signature.parameters.values())[1:] if p.name in bound]


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated items of an argument list."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        items.append(text[start:].strip())
    return items


def write_classes(net: NetShape) -> tuple[list[str], dict[type, str], dict[str, set[str]], str]:
    """The class definitions of a network: (lines, helper sources, torchvision imports, the network's class name).

    Only `torch`, `nn` and the returned helpers/imports are needed to run them.
    """
    strict: set[tuple[str, str]] = set()
    while True:
        writer = Writer(net, strict)
        try:
            # Bottom-up: a class's constructor arguments are known before the classes that use it are written.
            blocks = [writer.write_unit(unit) for unit in writer.order]
            root = Unit(class_name(net.name), [net.root], {})
            writer.units[id(net.root)] = root
            blocks.append(writer.write_unit(root))
        except _Replan as replan:
            strict.add((replan.block, replan.what))
            continue
        lines: list[str] = []
        for block in blocks:
            lines += [*block, "", ""]
        return lines[:-2], writer.helpers, writer.imports, root.name
