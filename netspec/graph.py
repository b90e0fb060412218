"""Stage 3: a validated `Spec` -> the expanded graph, the one structure every later stage walks.

Expansion instantiates every block use with its parameters, unrolls every repeat into copies
(each copy may use `$i`, its index, and `$n`, the count), substitutes every variable, resolves
every named tap (`as`/`from`) to the entry it reads, and names every module. It happens before
any shape is computed, so errors come out in file order and shape inference never calls back
into the spec.

The graph is a tree of three node types:

- `Layer`: one layer kind with its arguments (a residual's automatic shortcut is a `Layer` whose
  kind is decided from shapes);
- `Seq`: children applied in order: the spec itself (`root`), a block use (`block`), a repeat
  (`repeat`, whose children are its `copy` sequences), or a merge's branch (`branch`);
- `Merge`: parallel branches and how they combine (concat, add, multiply; residual is an add).

Names. The compiled network (and the exported Python) is a tree of modules with named attributes,
as a person writes it: the spec and every block use is a module ("scope") whose attributes are
named after their kinds (`conv1`, `bn1`, `relu`), block names (`inception3`), tap names (`as:`),
or merge branches (`body`, `shortcut`, `branch2`). A merge's branches belong to the enclosing
scope: a branch of one module is that module, a plain chain an nn.Sequential, anything else has
its entries flattened into the scope. A repeat is an nn.Sequential of its copies.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Union

from pydantic import ValidationError
from torch import nn

from netspec.errors import SpecError
from netspec.layers import LAYER_KINDS, MERGE_KINDS, Add, LayerSpec, MergeSpec
from netspec.source import YamlPath
from netspec.spec import (
    COMPOSITES,
    ENTRY_LIST,
    INPUT_NAME,
    TAP_KEYS,
    BlockCall,
    MergeEntry,
    Repeat,
    Residual,
    Spec,
    Tapped,
    as_spec,
    beside_the_kind,
    did_you_mean,
    kind_key,
    spec_error_from_validation,
    substitute,
)


class _Word(str, Enum):
    """An enum whose members are the words they stand for: equal to, hashed and printed as those strings."""

    def __str__(self) -> str:
        return str(self.value)


class Form(_Word):
    """What a sequence becomes in the compiled network (see the module docstring)."""

    SCOPE = "scope"  # a module with named attributes and its own forward (root, block use, complex repeat copy)
    SEQUENTIAL = "sequential"  # an nn.Sequential of its children's modules (a plain chain)
    SINGLE = "single"  # its only child's module (or learned tensor) stands for it
    FLAT = "flat"  # a branch whose children are attributes of the enclosing scope
    EMPTY = "empty"  # the identity: no module at all
    REPEAT = "repeat"  # an nn.Sequential of its copies


class Role(_Word):
    """What a sequence is in the spec."""

    ROOT = "root"  # the spec's own layers
    BLOCK = "block"  # a use of a block from `blocks:`
    REPEAT = "repeat"  # a repeat, whose children are its copies
    COPY = "copy"  # one copy of a repeat's body
    BRANCH = "branch"  # a merge's (or a residual's) branch


@dataclass
class Layer:
    """One layer kind. `written` holds its arguments as the block body writes them (`$out * 4`), for the
    export; `shortcut` marks a residual's automatic shortcut (auto or projection), decided from shapes."""

    layer: LayerSpec | None
    path: str
    yaml_path: YamlPath
    written: dict[str, Any] | None = None
    shortcut: str | None = None
    attr: str | None = None


@dataclass
class BlockUse:
    """A use of a block from `blocks:`: its name and the values of its parameters there."""

    name: str
    args: dict[str, Any]  # every parameter, defaults filled in
    written: dict[str, Any] | None = None  # as written at the use (`$out`), when the use sits in a block body


@dataclass
class Seq:
    """Children applied in order. `sources[k]` is None when child k reads the previous output, else the
    positions it reads (0: the sequence's input, j + 1: the output of child j); `names[k]` is child k's
    tap name (`as`)."""

    children: list[Node]
    sources: list[tuple[int, ...] | None]
    names: list[str | None]
    path: str
    yaml_path: YamlPath
    role: Role
    form: Form = Form.SCOPE
    block: BlockUse | None = None
    attr: str | None = None
    times_written: Any = None  # a repeat's `times` as its block body writes it (`$depth`), for the export
    taps: dict[str, int] = field(default_factory=dict)  # its names (`as:`) -> positions, as `sources` counts them

    @property
    def label(self) -> str | None:
        """What this sequence is, for tables and pictures: "inception c1=64, ..." or "repeat ×4"."""
        if self.block is not None:
            args = ", ".join(f"{k}={v}" for k, v in self.block.args.items())
            return f"{self.block.name} {args}".strip()
        if self.role == Role.REPEAT:
            return f"repeat ×{len(self.children)}"
        return None


@dataclass
class Merge:
    """Parallel branches combined by `op`; `kind` is the op's kind, or `residual`. With one input every branch
    reads it; with several (`from: [a, b]`) branch i reads input i. `branch_names` name their modules."""

    op: MergeSpec
    kind: str
    branches: list[Seq]
    branch_names: tuple[str, ...]
    path: str
    yaml_path: YamlPath


Node = Union[Layer, Seq, Merge]  # noqa: UP007


# --- expansion ---------------------------------------------------------------------------------


def _raw_parts(raw: Any) -> tuple[Any, Any]:
    """(kind key, its value) of an entry as written, without `as`/`from`."""
    if isinstance(raw, str):
        return raw, None
    if isinstance(raw, dict):
        key = kind_key(raw)
        return key, raw.get(key) if key is not None else None
    return None, None


def _raw_branches(value: Any) -> list[Any]:
    """The branches of a merge as written (the short form is the list itself)."""
    if isinstance(value, dict):
        value = value.get("branches")
    return list(value) if isinstance(value, list) else []


def _raw_list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


# The position of a block output (`down.skip`) that more than one unnamed use of the block gives.
AMBIGUOUS = -1

# The most layers a spec may expand to (repeats unrolled, blocks instantiated): far beyond any real network
# (ViT-H has a few hundred), small enough that a `repeat: {times: 1000000000}` is refused at once.
MAX_LAYERS = 100_000


@dataclass
class _Expander:
    spec: Spec
    blocks_used: set[str] = field(default_factory=set)
    count: int = 0  # layers expanded so far
    scale: int = 1  # copies of the sequence being expanded: the product of the enclosing repeats' times
    _sizes: dict[str, int] = field(default_factory=dict)  # each block's size as written (_block_size)

    def _size(self, raw: Any, seen: tuple[str, ...] = ()) -> int:
        """How many layers entries as written expand to, at least (capped just past MAX_LAYERS): a repeat whose
        count is still a `$parameter` counts once; a block counts its body."""
        cap = MAX_LAYERS + 1
        if isinstance(raw, list):
            return min(cap, sum(self._size(item, seen) for item in raw))
        if isinstance(raw, str):
            return self._block_size(raw, seen) if raw in self.spec.blocks else 1
        if not isinstance(raw, dict):
            return 0
        key, value = _raw_parts(raw)
        if key in self.spec.blocks:
            return self._block_size(key, seen)
        if key == "repeat" and isinstance(value, dict):
            times = value.get("times")
            times = times if isinstance(times, int) and not isinstance(times, bool) and times > 0 else 1
            return min(cap, min(times, cap) * self._size(value.get("layers"), seen))
        inner = value.values() if isinstance(value, dict) else [value]
        return min(cap, 1 + sum(self._size(v, seen) for v in inner if isinstance(v, list)))

    def _block_size(self, name: str, seen: tuple[str, ...]) -> int:
        if name in seen:
            return 1  # a cycle, reported when the block is used
        if name not in self._sizes:
            self._sizes[name] = self._size(self.spec.blocks[name].layers, (*seen, name))
        return self._sizes[name]

    def _grow(self, more: int, yaml_path: YamlPath, where: str, what: str) -> None:
        """Refuse an expansion that would pass MAX_LAYERS, before building any of it."""
        if self.count + more > MAX_LAYERS:
            raise self.error(
                f"{what} expands the spec to more than {MAX_LAYERS:,} layers (at least {self.count + more:,}); "
                "no network needs that many: check the repeat counts",
                yaml_path,
                where,
            )

    def error(self, message: str, yaml_path: YamlPath, where: str | None, key: bool = False) -> SpecError:
        return self.spec.source.error(message, yaml_path, where, key=key)

    def unknown_kind(self, name: str, env: dict[str, Any], stack: tuple[str, ...]) -> str:
        """Why `name` (an entry's kind that is not a layer kind) names nothing: a typo, or a `$name` as a key."""
        if not name.startswith("$"):
            return _unknown_kind(name, list(self.spec.blocks))
        block = stack[-1] if stack else None
        params = list(self.spec.blocks[block].params) if block else []
        return _parameter_as_kind(name, env, block, params)

    def validate(self, body: list[Any], prefix: YamlPath, layers_path: str) -> list[Any]:
        """Entries of a body kept as written (a block's, a repeat's), validated after substitution."""
        try:
            return ENTRY_LIST.validate_python(body)
        except ValidationError as exc:
            raise spec_error_from_validation(
                exc, {"layers": body}, self.spec.source, prefix=prefix, layers_path=layers_path, loc_prefix=("layers",)
            ) from None

    def seq(
        self,
        entries: list[Any],
        raw: list[Any] | None,
        path: str,
        yaml_path: YamlPath,
        role: Role,
        env: dict[str, Any],
        stack: tuple[str, ...],
    ) -> Seq:
        taps = {INPUT_NAME: 0}  # name -> position in `children` (0: the input, j + 1: child j's output)
        named_at: dict[str, int] = {}  # name -> index of the entry that names it, as written
        defined_at = {e.name: i for i, e in enumerate(entries) if isinstance(e, Tapped) and e.name}
        children: list[Node] = []
        sources: list[tuple[int, ...] | None] = []
        names: list[str | None] = []
        for i, entry in enumerate(entries):
            child_path, child_yaml = f"{path}[{i}]", (*yaml_path, i)
            child_raw = raw[i] if raw is not None and i < len(raw) else None
            name, inputs, kept = None, None, True
            if isinstance(entry, Tapped):
                name, inputs, kept, entry = entry.name, entry.inputs, entry.condition is not False, entry.entry
                if isinstance(child_raw, dict):
                    child_raw = {k: v for k, v in child_raw.items() if k not in TAP_KEYS} or None
            if isinstance(entry, BlockCall) and entry.name not in self.spec.blocks:
                raise self.error(self.unknown_kind(entry.name, env, stack), child_yaml, child_path)
            source = None
            if inputs is not None:
                source = tuple(self.tap(n, taps, defined_at, i, child_path, child_yaml, entry) for n in inputs)
                if len(source) > 1 and kept and not isinstance(entry, MergeEntry):
                    raise self.error(
                        f"takes {len(source)} inputs ({', '.join(inputs)}) but only a merge (concat, add, multiply) "
                        "combines several; give one name in from",
                        (*child_yaml, "from"),
                        child_path,
                    )
            if name is not None and (name == INPUT_NAME or name in taps):
                why = (
                    "is reserved for the sequence's input"
                    if name == INPUT_NAME
                    else f"is already the name of {path}[{named_at[name]}]"
                )
                raise self.error(f"the name '{name}' {why}", (*child_yaml, "as"), child_path)
            node = None
            if kept:
                node = self.entry(entry, child_raw, child_path, child_yaml, env, stack, len(source or [1]))
            use = node.block if isinstance(node, Seq) else None
            outputs = self.spec.blocks[use.name].outputs if use is not None else []
            if outputs:
                assert isinstance(node, Seq) and use is not None
                start = source[0] if source is not None else len(children)
                output, tapped = _splice(node, outputs, name, start, children, sources, names)
                for out, position in tapped.items():
                    # Two unnamed uses of a block give the same `block.out`: an error only where it is read.
                    taps[out], named_at[out] = (AMBIGUOUS if out in taps else position), i
            elif node is not None:
                children.append(node)
                sources.append(source)
                names.append(name)
                output = len(children)
            elif name is not None and source is not None and len(source) > 1:
                raise self.error(
                    f"is left out (its if: is false) but reads {len(source)} inputs, so its name '{name}' has no "
                    "one input to stand for; a named entry that may be left out reads one input",
                    (*child_yaml, "if"),
                    child_path,
                )
            else:  # left out, as if not written; its name stands for the input it would have read
                output = source[0] if source is not None else len(children)
            if name is not None:
                taps[name], named_at[name] = output, i
        return Seq(children, sources, names, path, yaml_path, role, taps=taps)

    def tap(
        self,
        name: str,
        taps: dict[str, int],
        defined_at: dict[str, int],
        position: int,
        path: str,
        yaml_path: YamlPath,
        entry: Any,
    ) -> int:
        """The position of the named output `name`, as seen from entry `position` of a sequence."""
        if name in taps and taps[name] != AMBIGUOUS:
            return taps[name]
        where = f"{path} {getattr(entry, 'kind', '')}".strip()
        if name in taps:
            block, out = name.split(".")
            message = (
                f"'{name}' is an output of more than one use of block {block} before it; give each use its own name "
                f"(as: NAME) and read NAME.{out}"
            )
        elif defined_at.get(name) == position:
            message = f"takes its input from its own output '{name}' (a cycle)"
        elif name in defined_at:
            message = (
                f"takes its input from '{name}', which is defined later ({path.rsplit('[', 1)[0]}[{defined_at[name]}]); "
                "an entry can only read outputs of entries before it (a cycle otherwise)"
            )
        else:
            known = list(taps)
            message = (
                f"unknown name '{name}' in from{did_you_mean(name, known)}; names here: {', '.join(known)} "
                "(a name is seen by the later entries of its own sequence)"
            )
        raise self.error(message, (*yaml_path, "from"), where)

    def entry(
        self,
        entry: Any,
        raw: Any,
        path: str,
        yaml_path: YamlPath,
        env: dict[str, Any],
        stack: tuple[str, ...],
        inputs: int,
    ) -> Node:
        key, value = _raw_parts(raw)
        if isinstance(entry, MergeEntry):
            raw_branches = _raw_branches(value) if key is not None else []
            return self.merge(entry, raw_branches, path, yaml_path, env, stack, inputs)
        if isinstance(entry, LayerSpec):
            self._grow(1, yaml_path, f"{path} {entry.kind}", "this layer")
            self.count += 1
            written = dict(value) if isinstance(value, dict) else ({} if raw is not None else None)
            return Layer(entry, path, yaml_path, written)
        if isinstance(entry, Repeat):
            seq = self.repeat(entry, path, yaml_path, env, stack)
            seq.times_written = value.get("times") if isinstance(value, dict) and raw is not None else None
            return seq
        if isinstance(entry, Residual):
            return self.residual(entry, value if isinstance(value, dict) else {}, path, yaml_path, env, stack)
        assert isinstance(entry, BlockCall)
        written = (dict(value) if isinstance(value, dict) else {}) if raw is not None else None
        return self.block(entry, written, path, yaml_path, env, stack)

    def merge(
        self,
        entry: MergeEntry,
        raw_branches: list[Any],
        path: str,
        yaml_path: YamlPath,
        env: dict[str, Any],
        stack: tuple[str, ...],
        inputs: int,
    ) -> Merge:
        op = entry.op
        where = f"{path} {op.kind}"
        bodies = entry.branches or [[] for _ in range(inputs)]
        if inputs > 1 and len(bodies) != inputs:
            raise self.error(
                f"has {inputs} inputs in from but {len(bodies)} branches; give one branch per input, or none",
                yaml_path,
                where,
            )
        if len(bodies) < 2:
            raise self.error(
                f"{op.kind} needs at least two branches (or two inputs in from) to combine, got {len(bodies)}",
                yaml_path,
                where,
            )
        written = (*yaml_path, op.kind)
        if (*written, "branches") in self.spec.source.marks:
            written = (*written, "branches")  # the long form; the short form's value is the branch list itself
        branches = [
            self.seq(
                body,
                _raw_list(raw_branches[b]) if b < len(raw_branches) else None,
                f"{path}.branch[{b}]",
                (*written, b),
                Role.BRANCH,
                env,
                stack,
            )
            for b, body in enumerate(bodies)
        ]
        names = tuple(f"branch{b + 1}" for b in range(len(branches)))
        return Merge(op, op.kind, branches, names, path, yaml_path)

    def residual(
        self,
        entry: Residual,
        raw: dict[str, Any],
        path: str,
        yaml_path: YamlPath,
        env: dict[str, Any],
        stack: tuple[str, ...],
    ) -> Merge:
        """add(body, shortcut), the shortcut as the entry says (auto and projection are decided from shapes)."""
        body = self.seq(
            entry.layers, _raw_list(raw.get("layers")), f"{path}.residual", (*yaml_path, "residual", "layers"),
            Role.BRANCH, env, stack,
        )  # fmt: skip
        shortcut_yaml = (*yaml_path, "residual", "shortcut")
        if isinstance(entry.shortcut, list):
            shortcut = self.seq(
                entry.shortcut,
                _raw_list(raw.get("shortcut")),
                f"{path}.shortcut",
                shortcut_yaml,
                Role.BRANCH,
                env,
                stack,
            )
        elif entry.shortcut == "identity":
            shortcut = Seq([], [], [], f"{path}.shortcut", shortcut_yaml, Role.BRANCH)
        else:
            auto = Layer(None, f"{path}.shortcut[0]", shortcut_yaml, shortcut=entry.shortcut)
            shortcut = Seq([auto], [None], [None], f"{path}.shortcut", shortcut_yaml, Role.BRANCH)
        return Merge(Add(), "residual", [body, shortcut], ("body", "shortcut"), path, yaml_path)

    def repeat(self, entry: Repeat, path: str, yaml_path: YamlPath, env: dict[str, Any], stack: tuple[str, ...]) -> Seq:
        """One copy per repeat, each validated with its own `$i` (0, 1, ...) and `$n` (the count)."""
        body_yaml = (*yaml_path, "repeat", "layers")
        # Checked before unrolling: this repeat's copies times those of the repeats around it.
        what = f"repeat ×{entry.times:,}" + (f" inside repeats ×{self.scale:,}" if self.scale > 1 else "")
        self._grow(entry.times * self.scale * max(1, self._size(entry.layers)), (*yaml_path, "repeat", "times"),
                   f"{path} repeat", what)  # fmt: skip
        outer, self.scale = self.scale, self.scale * entry.times
        try:
            copies = self._copies(entry, path, yaml_path, body_yaml, env, stack)
        finally:
            self.scale = outer
        n = len(copies)
        return Seq(copies, [None] * n, [None] * n, path, yaml_path, Role.REPEAT, Form.REPEAT)

    def _copies(
        self, entry: Repeat, path: str, yaml_path: YamlPath, body_yaml: YamlPath, env: dict[str, Any],
        stack: tuple[str, ...],
    ) -> list[Node]:  # fmt: skip
        copies: list[Node] = []
        for i in range(entry.times):
            copy_env = {**env, "i": i, "n": entry.times}
            body = substitute(entry.layers, copy_env, body_yaml, self.spec.source, _unknown(copy_env, "repeat"))
            entries = self.validate(body, (*yaml_path, "repeat"), f"{path}.repeat")
            copies.append(self.seq(entries, entry.layers, f"{path}.repeat#{i}", body_yaml, Role.COPY, copy_env, stack))
        return copies

    def block(
        self,
        call: BlockCall,
        written: dict[str, Any] | None,
        path: str,
        yaml_path: YamlPath,
        env: dict[str, Any],
        stack: tuple[str, ...],
    ) -> Seq:
        """The layers of a block use, with its parameters substituted."""
        spec, where = self.spec, f"{path} {call.name}"
        if call.name not in spec.blocks:
            raise self.error(self.unknown_kind(call.name, env, stack), yaml_path, path)
        if call.name in stack:
            cycle = " → ".join((*stack[stack.index(call.name) :], call.name))
            raise self.error(f"block {call.name} uses itself ({cycle})", yaml_path, where)
        block = spec.blocks[call.name]
        if not isinstance(call.args, dict):
            raise self.error(
                f"the parameters of block {call.name} are a mapping (name: value), not a {type(call.args).__name__}; "
                f"it takes: {', '.join(block.params) or 'none'}",
                (*yaml_path, call.name),
                where,
            )
        size = self._block_size(call.name, ())
        if size > 1:
            what = f"block {call.name}" + (
                f" inside repeats ×{self.scale:,}" if self.scale > 1 else ""
            )
            self._grow(size * self.scale, yaml_path, where, what)
        for arg in call.args:
            if arg not in block.params:
                hint = did_you_mean(str(arg), list(block.params))
                if arg in TAP_KEYS:
                    hint = f": {beside_the_kind(arg, call.name, call.args[arg])}"
                raise self.error(
                    f"unknown parameter '{arg}'{hint}; block {call.name} takes: {', '.join(block.params) or 'none'}",
                    (*yaml_path, call.name, arg),
                    where,
                    key=True,
                )
        params = {**block.params, **call.args}
        missing = [k for k, v in params.items() if v is None]
        if missing:
            raise self.error(f"block {call.name} needs parameter {', '.join(missing)}", yaml_path, where)
        body_yaml: YamlPath = ("blocks", call.name, "layers")
        unknown = _unknown_parameter(call.name, block.params, spec.vars)
        defaults = substitute(block.params, dict(spec.vars), ("blocks", call.name, "params"), spec.source, unknown)
        values = {**defaults, **call.args}
        block_env = {**spec.vars, **values}  # a parameter hides a variable of the same name
        body = substitute(block.layers, block_env, body_yaml, spec.source, unknown)
        entries = self.validate(body, ("blocks", call.name), f"{path}.{call.name}")
        seq = self.seq(entries, list(block.layers), f"{path}.{call.name}", body_yaml, Role.BLOCK, block_env,
                       (*stack, call.name))  # fmt: skip
        for out in block.outputs:
            if out not in seq.taps:
                inner = ", ".join(n for n in seq.taps if n != INPUT_NAME) or "none"
                raise self.error(
                    f"block {call.name} declares the output '{out}' but no entry of its body is named {out} "
                    f"(as: {out}){did_you_mean(out, list(seq.taps))}; names in its body: {inner}",
                    ("blocks", call.name, "outputs"),
                    where,
                )
        seq.block = BlockUse(call.name, values, written)
        self.blocks_used.add(call.name)
        return seq


def _splice(
    block: Seq,
    outputs: list[str],
    name: str | None,
    start: int,
    children: list[Node],
    sources: list[tuple[int, ...] | None],
    names: list[str | None],
) -> tuple[int, dict[str, int]]:
    """Write a block use with named outputs in place: its children join the caller's sequence (their positions
    renumbered, the block's input being position `start`), so that its inner outputs are values the caller reads.
    Returns the position of the block's output and of each named output (`NAME.skip`, NAME the use's `as:` or the
    block's name). Its layers keep their values but not the expressions of its body (`$ch`), which mean nothing
    in the caller's scope."""
    base, prefix = len(children), name or (block.block.name if block.block else "")
    for k, (child, source) in enumerate(zip(block.children, block.sources, strict=True)):
        if source is None and k == 0 and start != base:
            source = (start,)  # the use reads a named input, not the caller's previous output
        elif source is not None:
            source = tuple(start if j == 0 else base + j for j in source)
        _forget_expressions(child)
        children.append(child)
        sources.append(source)
        names.append(block.names[k])
    tapped: dict[str, int] = {}
    for out in outputs:
        position = block.taps[out]
        tapped[f"{prefix}.{out}"] = start if position == 0 else base + position
        if position > 0:
            names[base + position - 1] = f"{prefix}.{out}"
    if name is not None and block.children:
        names[-1] = name
    return (len(children) if block.children else start), tapped


def _forget_expressions(node: Node) -> None:
    """Drop the expressions a node was written with in its block's body, down to (not into) nested block uses."""
    if isinstance(node, Layer):
        node.written = None
    elif isinstance(node, Merge):
        for branch in node.branches:
            _forget_expressions(branch)
    elif node.block is not None:
        node.block.written = None
    else:
        node.times_written = None
        for child in node.children:
            _forget_expressions(child)


def _unknown(env: dict[str, Any], where: str) -> Any:
    def message(name: str) -> str:
        known = ", ".join(f"${k}" for k in env) or "none"
        return f"unknown variable ${name}{did_you_mean(name, list(env))} in a {where} (known here: {known})"

    return message


def _unknown_parameter(block: str, params: dict[str, Any], variables: dict[str, Any]) -> Any:
    def message(name: str) -> str:
        known = ", ".join(params) or "none"
        also = f"; the spec's vars: {', '.join(variables)}" if variables else ""
        return (
            f"unknown parameter ${name}{did_you_mean(name, [*params, *variables])} (block {block} takes: {known}{also})"
        )

    return message


def _unknown_kind(name: str, blocks: list[str]) -> str:
    """'unknown layer kind' with the closest kind or block, or the list of kinds when nothing is close."""
    known = [*LAYER_KINDS, *MERGE_KINDS, *COMPOSITES, *blocks]
    hint = did_you_mean(name, known, 0.7) or did_you_mean(name.lower(), known, 0.7)
    if hint:
        return f"unknown layer kind '{name}'{hint}"
    listing = ", ".join(sorted([*LAYER_KINDS, *MERGE_KINDS, *COMPOSITES]))
    defined = f"; blocks: {', '.join(blocks)}" if blocks else "; the spec defines no blocks"
    return f"unknown layer kind '{name}' (neither a layer kind nor a block); the kinds are: {listing}{defined}"


def _parameter_as_kind(name: str, env: dict[str, Any], block: str | None, params: list[str]) -> str:
    """Why `- $name: {...}` is no kind: a `$name` is replaced only where it is a value (`- $name` alone), so one
    written as a key, with arguments beside it, stays as written."""
    param = name[1:]
    example = f"{param}: {{leaky_relu: {{negative_slope: 0.1}}}}"
    if param in env:
        return (
            f"'{name}' is written as a kind with arguments, but a $name is replaced only where it stands alone; "
            f"give the layer with its arguments as the value ({example}) and write '- {name}'"
        )
    hint = did_you_mean(param, list(env))
    if block is None:
        return (
            f"'{name}' is not a variable of the spec{hint}, so nothing replaces it; a spec variable holds a number "
            f"or a word (vars: {{{param}: relu}}, used as '- {name}'), a block parameter may hold a layer with "
            f"its arguments ({example})"
        )
    return (
        f"'{name}' is not a parameter of block {block} (it takes: {', '.join(params) or 'none'}){hint}, so nothing "
        f"replaces it; declare it with the layer it stands for (params: {{{example}}}) and write '- {name}'"
    )


# --- names and forms -----------------------------------------------------------------------------

# Attribute names a module already has (and Python keywords) get a trailing underscore.
_RESERVED = {*dir(nn.Module), *keyword.kwlist, "program", "result", "net_shape", "spec"}


def _module_like(node: Node) -> bool:
    """A node that is one module in the compiled network (a layer, a block use, a repeat)."""
    if isinstance(node, Layer):
        return node.layer is None or not node.layer.is_tensor
    return isinstance(node, Seq) and node.role in (Role.BLOCK, Role.REPEAT)


def _is_tensor(node: Node) -> bool:
    return isinstance(node, Layer) and node.layer is not None and node.layer.is_tensor


def _form(seq: Seq) -> Form:
    """How a branch or a repeat copy is materialized (see the module docstring)."""
    if not seq.children:
        return Form.EMPTY
    chain = all(s is None for s in seq.sources)
    if (
        chain
        and len(seq.children) == 1
        and (_module_like(seq.children[0]) or (seq.role == Role.BRANCH and _is_tensor(seq.children[0])))
    ):
        return Form.SINGLE
    if chain and all(_module_like(c) for c in seq.children):
        return Form.SEQUENTIAL
    return Form.FLAT if seq.role == Role.BRANCH else Form.SCOPE


def _identifier(text: str) -> str:
    name = re.sub(r"\W", "_", text).strip("_") or "module"
    return f"_{name}" if name[0].isdigit() else name


def _base(node: Node, tap: str | None) -> str:
    if tap:
        return tap
    if isinstance(node, Layer):
        return "shortcut" if node.layer is None else (node.layer.attr or node.layer.kind)
    if isinstance(node, Seq) and node.block is not None:
        return node.block.name
    if isinstance(node, Seq) and node.role == Role.REPEAT:
        first = node.children[0] if node.children else None
        if isinstance(first, Seq) and first.form == Form.SINGLE and isinstance(first.children[0], Seq):
            inner = first.children[0]
            if inner.block is not None:
                return inner.block.name + "s"  # repeat: [basic_block] -> basic_blocks
        return "repeat"
    return "module"


def _name_scope(scope: Seq) -> None:
    """Give every attribute of one scope module its name: bases from kinds, blocks, taps and branches; a base
    used more than once is numbered in reading order (conv1, conv2)."""
    items: list[tuple[Layer | Seq, str]] = []

    def collect(seq: Seq) -> None:
        for child, tap in zip(seq.children, seq.names, strict=True):
            if isinstance(child, Merge):
                for branch, name in zip(child.branches, child.branch_names, strict=True):
                    if branch.form == Form.SINGLE:
                        items.append((branch.children[0], branch.names[0] or name))  # type: ignore[arg-type]
                    elif branch.form == Form.SEQUENTIAL:
                        items.append((branch, name))
                    elif branch.form == Form.FLAT:
                        collect(branch)
            else:
                items.append((child, _base(child, tap)))

    collect(scope)
    counts = Counter(_identifier(base) for _, base in items)
    seen: Counter[str] = Counter()
    taken: set[str] = set()
    for node, base in items:
        base = _identifier(base)
        if counts[base] > 1:
            seen[base] += 1
            name = f"{base}{'_' if base[-1].isdigit() else ''}{seen[base]}"
        else:
            name = base
        if name in _RESERVED:
            name += "_"
        while name in taken:
            name += "_"
        taken.add(name)
        node.attr = name


def _finish(node: Node) -> None:
    """Decide every sequence's form (bottom-up), then name the attributes of every scope."""
    if isinstance(node, Merge):
        for branch in node.branches:
            _finish(branch)
        return
    if not isinstance(node, Seq):
        return
    for child in node.children:
        _finish(child)
    if node.role in (Role.BRANCH, Role.COPY):
        node.form = _form(node)
    if node.form == Form.SCOPE:
        _name_scope(node)


@dataclass
class Graph:
    """The expanded spec: `root` is the spec's own sequence."""

    spec: Spec
    root: Seq
    blocks_used: set[str]


def expand(spec: Spec | str | Path | dict[str, Any]) -> Graph:
    """Expand a spec (a Spec, a path, YAML text or a dict) into its graph."""
    spec = as_spec(spec)
    expander = _Expander(spec)
    root = expander.seq(list(spec.layers), None, "layers", ("layers",), Role.ROOT, dict(spec.vars), ())
    _finish(root)
    return Graph(spec, root, expander.blocks_used)
