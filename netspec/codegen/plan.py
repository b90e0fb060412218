"""Class planning for the code generator: which classes the file has (one per block, or per variant of a
block whose uses differ in structure, one per distinct repeat copy) and which uses each class serves."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from netspec.codegen.symbolic import Sizes, py_literal
from netspec.expr import evaluate
from netspec.graph import Form, Role
from netspec.shapes import LayerInfo, NetShape, ShapedMerge, ShapedNode, ShapedSeq


def class_name(name: str) -> str:
    """`mobilenet_v2_small` -> `MobilenetV2Small`."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    text = "".join(w[0].upper() + w[1:] for w in words) or "Net"
    return text if text[0].isalpha() else f"Net{text}"


@dataclass
class ClassPlan:
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


def repeat_of(node: ShapedSeq) -> str | None:
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
    looped = repeat_of(node) if loops else None
    if looped is not None:
        return ("loop", node.attr, looped, str(node.times_written))
    inner = tuple(_skeleton(c, loose, loops) for c in node.children)
    block = node.block.name if node.block is not None and node.role != Role.ROOT else None
    return (node.form, node.attr, block, tuple(node.sources), tuple(node.names), inner)


def _class_skeleton(seq: ShapedSeq, loose: frozenset[str] = frozenset(), loops: bool = True) -> Any:
    return tuple(_skeleton(c, loose, loops) for c in seq.children), tuple(seq.sources)


class Replan(Exception):
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


def plan_classes(net: NetShape, strict: set[tuple[str, str]]) -> tuple[dict[int, ClassPlan], list[ClassPlan]]:
    """The classes to write: (id(scope) -> its class, for every block use and repeat copy that is a class;
    the classes in the order they are written, each after the classes it uses). `strict` names the blocks
    whose repeats are written copy by copy ("loops") or whose shortcut variants are separate classes
    ("optional")."""
    plans: dict[int, ClassPlan] = {}
    order: list[ClassPlan] = []
    scopes: list[ShapedSeq] = []
    for child in net.root.children:
        _collect_scopes(child, scopes)
    groups: dict[Any, list[ShapedSeq]] = {}
    for scope in scopes:
        key = scope.block.name if scope.block is not None else ("copy", _class_skeleton(scope, loops=False))
        groups.setdefault(key, []).append(scope)
    taken: set[str] = {class_name(net.name)}
    for key, members in groups.items():
        for variant, (instances, optional) in enumerate(_variants(net, strict, members)):
            base = class_name(key) if isinstance(key, str) else "RepeatUnit"
            name = base if variant == 0 else f"{base}{variant + 1}"
            while name in taken or name in dir(nn):
                name += "_"
            taken.add(name)
            block = instances[0].block
            params = dict(_block_params(net, block.name)) if block is not None else {}
            plan = ClassPlan(name, instances, params, optional=optional)
            for scope in instances:
                plans[id(scope)] = plan
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
            plan = plans.get(id(node))
            if plan is not None and id(plan) not in seen:
                seen.add(id(plan))
                order.append(plan)

    visit(net.root)
    return plans, order


def _block_params(net: NetShape, name: str) -> dict[str, Any]:
    """A block's parameters and their defaults, with the spec's variables in defaults put in."""
    params = {}
    for key, default in net.spec.blocks[name].params.items():
        if isinstance(default, str) and "$" in default:
            try:
                default = evaluate(default, dict(net.spec.vars), lambda n: n)
            except ValueError:
                default = None
        params[key] = default
    return params


def _variants(
    net: NetShape, strict: set[tuple[str, str]], members: list[ShapedSeq]
) -> list[tuple[list[ShapedSeq], dict[str, str]]]:
    """Uses of one block grouped by structure; two groups that differ only in whether a residual shortcut is
    the identity become one class with a conditional shortcut when a parameter tells them apart."""
    groups: dict[Any, list[ShapedSeq]] = {}
    block = members[0].block
    loops = block is None or (block.name, "loops") not in strict
    for scope in members:
        groups.setdefault(_class_skeleton(scope, loops=loops), []).append(scope)
    variants = [(g, {}) for g in groups.values()]
    if len(variants) == 2 and block is not None and (block.name, "optional") not in strict:
        shortcuts = _optional_branches(members[0])
        loose = frozenset(shortcuts)
        a, b = (g for g, _ in variants)
        if loose and _class_skeleton(a[0], loose, loops) == _class_skeleton(b[0], loose, loops):
            condition = _condition(net, a, b, next(iter(shortcuts)))
            if condition is not None:
                ordered = sorted([*a, *b], key=members.index)
                return [(ordered, {next(iter(shortcuts)): condition})]
    return variants


def _condition(net: NetShape, a: list[ShapedSeq], b: list[ShapedSeq], branch: str) -> str | None:
    """A test on one block parameter that is true exactly for the uses whose `branch` is a module."""

    def has_module(scope: ShapedSeq) -> bool:
        return any(
            isinstance(c, ShapedMerge) and branch in c.names and c.branches[c.names.index(branch)].form != Form.EMPTY
            for c in scope.children
        )

    with_module = [s for s in [*a, *b] if has_module(s)]
    without = [s for s in [*a, *b] if not has_module(s)]
    block = a[0].block
    if block is None:
        return None
    defaults = _block_params(net, block.name)
    # An explicit choice (a word like `shortcut: projection`) reads best, then flags, then numbers.
    for param in sorted(
        block.args, key=lambda p: (not isinstance(block.args[p], str), not isinstance(block.args[p], bool))
    ):
        yes = {py_literal(s.block.args[param]) for s in with_module}  # type: ignore[union-attr]
        no = {py_literal(s.block.args[param]) for s in without}  # type: ignore[union-attr]
        if yes & no:
            continue
        if no == {py_literal(defaults.get(param))}:
            return f"{param} != {next(iter(no))}"
        if len(yes) == 1:
            return f"{param} == {next(iter(yes))}"
        if len(no) == 1:
            return f"{param} != {next(iter(no))}"
    return None
