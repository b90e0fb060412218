"""Stage 3: a `Spec` -> every layer's shape, parameter count and MACs, without tensors.

The walk expands blocks and repeats, resolves taps (`as`/`from`), checks that the
branches of every merge (and residual) agree, and produces the one tree that every
later stage reads: `ShapedSeq` (children with their input wiring), `ShapedMerge`
(parallel branches and how they combine) and `LayerInfo` leaves. The compiler turns
it into modules one-to-one. Errors name the layer's path and kind, the numbers, and
where its input came from: "(input 16×4×4 after layers[5])".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from netspec.layers import Add, Conv2d, LayerSpec, MergeMismatch, MergeSpec, Shape, ShapeError, format_shape
from netspec.source import YamlPath
from netspec.spec import (
    INPUT_NAME,
    BlockCall,
    MergeEntry,
    Repeat,
    Residual,
    Spec,
    Tapped,
    did_you_mean,
    instantiate_block,
    load_spec,
)


@dataclass
class LayerInfo:
    """One row of the summary: a layer, or the merge that combines parallel branches."""

    index: int
    path: str
    kind: str
    input_shape: Shape
    output_shape: Shape
    params: int
    macs: int
    layer: LayerSpec | MergeSpec = field(repr=False)
    depth: int = 0  # how many merges it sits inside, for the indented table
    name: str | None = None  # the tap name (`as`) of the output this row produces
    reads: tuple[str, ...] = ()  # the tap names (`from`) this row reads instead of the previous output

    @property
    def is_merge(self) -> bool:
        return isinstance(self.layer, MergeSpec)


@dataclass
class ShapedSeq:
    """Children applied in order (the spec itself, a block use, a repeat copy, a branch).

    `sources[k]` says where child k reads its input: None for the previous child's
    output (the sequence's input for child 0), else positions in the sequence's values,
    where 0 is the sequence's input and j + 1 the output of child j (a tap). A merge
    child with several sources gets one input per source.

    Paths name layers as written: `layers[2]` is the third top-level entry,
    `layers[2].basic_block[0].residual[1]` the second layer of the residual body that
    is the first layer of the block `basic_block` used there, `layers[4].branch[1][0]`
    the first layer of branch 1 of the merge at layers[4]; repeat copies are
    `repeat#0`, `repeat#1`, ...
    """

    children: list[ShapedNode]
    sources: list[tuple[int, ...] | None] = field(default_factory=list)
    names: list[str | None] = field(default_factory=list)  # each child's tap name (`as`), if any
    label: str | None = None  # what this sequence is: a block use ("inception c1=64, ...") or a repeat ("repeat ×4")

    @property
    def is_chain(self) -> bool:
        """True when every child reads the previous one's output (a plain nn.Sequential)."""
        return all(source is None for source in self.sources)


@dataclass
class ShapedMerge:
    """Parallel branches combined by a merge kind (concat, add, multiply; residual is an add).

    With one input every branch reads it; with several (`from: [a, b]`) branch i reads
    input i. An empty branch is the identity. `names` are the branches' module names.
    """

    info: LayerInfo
    branches: list[ShapedSeq]
    names: tuple[str, ...]


ShapedNode = Union[LayerInfo, ShapedSeq, ShapedMerge]  # noqa: UP007


def rows_of(node: ShapedNode) -> list[LayerInfo]:
    """Every row under a node, in reading order (a merge's row before its branches' rows)."""
    if isinstance(node, LayerInfo):
        return [node]
    if isinstance(node, ShapedMerge):
        return [node.info, *(r for b in node.branches for r in rows_of(b))]
    return [r for c in node.children for r in rows_of(c)]


def output_of(node: ShapedNode) -> Shape:
    """The shape a (non-empty) node gives."""
    if isinstance(node, LayerInfo):
        return node.output_shape
    if isinstance(node, ShapedMerge):
        return node.info.output_shape
    return output_of(node.children[-1])


@dataclass
class NetShape:
    """The result of shape inference for a whole spec."""

    spec: Spec
    root: ShapedSeq
    layers: list[LayerInfo]  # every row, in reading order (a merge before its branches)
    input_shape: Shape
    output_shape: Shape

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def total_params(self) -> int:
        return sum(info.params for info in self.layers)

    @property
    def trainable_params(self) -> int:
        return self.total_params  # every parameter netspec creates is trainable

    @property
    def macs(self) -> int:
        return sum(info.macs for info in self.layers)


@dataclass
class _Tap:
    value: int  # position in the sequence's values
    shape: Shape
    path: str


@dataclass
class _Walker:
    spec: Spec
    layers: list[Any] = field(default_factory=list)
    # The path of the layer that produced the current tensor, for "(input ... after layers[5])".
    last_path: str = ""
    depth: int = 0
    last_row: int = -1  # the row whose output is the current tensor

    def error(self, message: str, yaml_path: YamlPath, where: str) -> Exception:
        return self.spec.source.error(message, yaml_path, where)

    def seq(
        self, entries: list[Any], shape: Shape, path: str, yaml_path: YamlPath, stack: tuple[str, ...]
    ) -> tuple[ShapedSeq, Shape]:
        taps = {INPUT_NAME: _Tap(0, shape, self.last_path)}
        defined_at = {e.name: i for i, e in enumerate(entries) if isinstance(e, Tapped) and e.name}
        children: list[ShapedNode] = []
        sources: list[tuple[int, ...] | None] = []
        names: list[str | None] = []
        for i, entry in enumerate(entries):
            child_path, child_yaml = f"{path}[{i}]", (*yaml_path, i)
            name, inputs = None, None
            if isinstance(entry, Tapped):
                name, inputs, entry = entry.name, entry.inputs, entry.entry
            in_shapes = [shape]
            if inputs is not None:
                used = [self.tap(n, taps, defined_at, i, child_path, child_yaml, entry) for n in inputs]
                if len(used) > 1 and not isinstance(entry, MergeEntry):
                    raise self.error(
                        f"takes {len(used)} inputs ({', '.join(inputs)}) but only a merge (concat, add, multiply) "
                        "combines several; give one name in from",
                        (*child_yaml, "from"),
                        child_path,
                    )
                in_shapes = [tap.shape for tap in used]
                self.last_path = used[-1].path
            first_row = len(self.layers)
            node, shape = self.entry(entry, in_shapes, child_path, child_yaml, stack, inputs)
            if inputs is not None and first_row < len(self.layers):
                self.layers[first_row].reads = tuple(inputs)
            children.append(node)
            sources.append(None if inputs is None else tuple(taps[n].value for n in inputs))
            names.append(name)
            if name is not None:
                if name == INPUT_NAME or name in taps:
                    why = (
                        "is reserved for the sequence's input"
                        if name == INPUT_NAME
                        else (f"is already the name of {taps[name].path}")
                    )
                    raise self.error(f"the name '{name}' {why}", (*child_yaml, "as"), child_path)
                taps[name] = _Tap(i + 1, shape, child_path)
                if self.last_row >= 0:
                    self.layers[self.last_row].name = name
        return ShapedSeq(children, sources, names), shape

    def tap(
        self,
        name: str,
        taps: dict[str, _Tap],
        defined_at: dict[str, int],
        position: int,
        path: str,
        yaml_path: YamlPath,
        entry: Any,
    ) -> _Tap:
        """The named output `name`, as seen from entry `position` of a sequence."""
        if name in taps:
            return taps[name]
        where = f"{path} {getattr(entry, 'kind', '')}".strip()
        if defined_at.get(name) == position:
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
        in_shapes: list[Shape],
        path: str,
        yaml_path: YamlPath,
        stack: tuple[str, ...],
        input_names: list[str] | None = None,
    ) -> tuple[ShapedNode, Shape]:
        if isinstance(entry, MergeEntry):
            return self.merge(entry, in_shapes, path, yaml_path, stack, input_names)
        shape = in_shapes[0]
        if isinstance(entry, LayerSpec):
            return self.leaf(entry, shape, path, yaml_path)
        if isinstance(entry, Repeat):
            copies: list[ShapedNode] = []
            for copy in range(entry.times):
                node, shape = self.seq(
                    entry.layers, shape, f"{path}.repeat#{copy}", (*yaml_path, "repeat", "layers"), stack
                )
                copies.append(node)
            return ShapedSeq(copies, [None] * len(copies), [None] * len(copies), f"repeat ×{entry.times}"), shape
        if isinstance(entry, Residual):
            return self.residual(entry, shape, path, yaml_path, stack)
        assert isinstance(entry, BlockCall)
        where = f"{path} {entry.name}"
        if entry.name in stack:
            cycle = " → ".join((*stack[stack.index(entry.name) :], entry.name))
            raise self.error(f"block {entry.name} uses itself ({cycle})", yaml_path, where)
        body = instantiate_block(self.spec, entry, yaml_path, path)
        node, out = self.seq(
            body, shape, f"{path}.{entry.name}", ("blocks", entry.name, "layers"), (*stack, entry.name)
        )
        node.label = entry.name + (" " + ", ".join(f"{k}={v}" for k, v in entry.args.items()) if entry.args else "")
        return node, out

    def leaf(self, layer: LayerSpec, shape: Shape, path: str, yaml_path: YamlPath) -> tuple[LayerInfo, Shape]:
        try:
            out = layer.output_shape(shape)
        except ShapeError as exc:
            origin = f"after {self.last_path}" if self.last_path else "from the spec's input"
            raise self.error(
                f"{exc} (input {format_shape(shape)} {origin})", yaml_path, f"{path} {layer.kind}"
            ) from None
        if any(d < 1 for d in out):
            raise self.error(
                f"output {format_shape(out)} is empty (input {format_shape(shape)})", yaml_path, f"{path} {layer.kind}"
            )
        info = LayerInfo(
            index=len(self.layers),
            path=path,
            kind=layer.kind,
            input_shape=shape,
            output_shape=out,
            params=layer.num_params(shape),
            macs=layer.macs(shape, out),
            layer=layer,
            depth=self.depth,
        )
        self.layers.append(info)
        self.last_path, self.last_row = path, info.index
        return info, out

    def _reserve_row(self) -> int:
        """A merge's row comes before its branches' rows; its numbers are known only after them."""
        self.layers.append(None)
        return len(self.layers) - 1

    def _branches(
        self,
        bodies: list[tuple[list[Any], Shape, str, YamlPath]],
        stack: tuple[str, ...],
    ) -> list[tuple[ShapedSeq, Shape, str]]:
        """Walk parallel branches (entries, input shape, path, YAML path); each starts from its own input."""
        origin, results = self.last_path, []
        self.depth += 1
        for entries, shape, path, yaml_path in bodies:
            self.last_path = origin
            node, out = self.seq(entries, shape, path, yaml_path, stack)
            results.append((node, out, path))
        self.depth -= 1
        return results

    def merge(
        self,
        entry: MergeEntry,
        in_shapes: list[Shape],
        path: str,
        yaml_path: YamlPath,
        stack: tuple[str, ...],
        input_names: list[str] | None = None,
    ) -> tuple[ShapedMerge, Shape]:
        op = entry.op
        where = f"{path} {op.kind}"
        bodies = entry.branches or [[] for _ in in_shapes]
        if len(in_shapes) > 1 and len(bodies) != len(in_shapes):
            raise self.error(
                f"has {len(in_shapes)} inputs in from but {len(bodies)} branches; give one branch per input, or none",
                yaml_path,
                where,
            )
        if len(bodies) < 2:
            raise self.error(
                f"{op.kind} needs at least two branches (or two inputs in from) to combine, got {len(bodies)}",
                yaml_path,
                where,
            )
        index = self._reserve_row()
        written = (*yaml_path, op.kind)
        if (*written, "branches") in self.spec.source.marks:
            written = (*written, "branches")  # the long form; the short form's value is the branch list itself
        branches = self._branches(
            [
                (body, in_shapes[b] if len(in_shapes) > 1 else in_shapes[0], f"{path}.branch[{b}]", (*written, b))
                for b, body in enumerate(bodies)
            ],
            stack,
        )
        outs = [out for _, out, _ in branches]
        try:
            out = op.output_shape(outs)
        except MergeMismatch as exc:
            labels = [
                p if not input_names or len(input_names) < 2 else f"{p} (from {n})"
                for (_, _, p), n in zip(branches, input_names or [""] * len(branches), strict=True)
            ]
            listing = ", ".join(f"{label} {format_shape(o)}" for label, o in zip(labels, outs, strict=True))
            raise self.error(
                f"branch {exc.first} gives {format_shape(outs[exc.first])} but branch {exc.second} gives "
                f"{format_shape(outs[exc.second])} ({exc.reason}); branches: {listing}",
                yaml_path,
                where,
            ) from None
        except ShapeError as exc:
            raise self.error(f"{exc} (branches give {', '.join(map(format_shape, outs))})", yaml_path, where) from None
        self.layers[index] = LayerInfo(index, path, op.kind, in_shapes[0], out, 0, op.macs(outs, out), op, self.depth)
        self.last_path, self.last_row = path, index
        names = tuple(str(b) for b in range(len(branches)))
        return ShapedMerge(self.layers[index], [node for node, _, _ in branches], names), out

    def residual(
        self, entry: Residual, shape: Shape, path: str, yaml_path: YamlPath, stack: tuple[str, ...]
    ) -> tuple[ShapedMerge, Shape]:
        """add(body, shortcut), with the shortcut chosen as the entry says."""
        where, origin = f"{path} residual", self.last_path
        index = self._reserve_row()
        ((body, out, _),) = self._branches(
            [(entry.layers, shape, f"{path}.residual", (*yaml_path, "residual", "layers"))], stack
        )
        self.last_path = origin
        if isinstance(entry.shortcut, list):
            ((shortcut, short_out, _),) = self._branches(
                [(entry.shortcut, shape, f"{path}.shortcut", (*yaml_path, "residual", "shortcut"))], stack
            )
        elif entry.shortcut == "identity" or (entry.shortcut == "auto" and out == shape):
            shortcut, short_out = ShapedSeq([]), shape
        else:
            projection = _projection(shape, out)
            if projection is None:
                raise self.error(
                    f"no 1×1 convolution maps the input {format_shape(shape)} to the body's output "
                    f"{format_shape(out)}; give an explicit shortcut list",
                    (*yaml_path, "residual"),
                    where,
                )
            self.depth += 1
            info, short_out = self.leaf(projection, shape, f"{path}.shortcut[0]", (*yaml_path, "residual", "shortcut"))
            self.depth -= 1
            shortcut = ShapedSeq([info], [None], [None])
        if short_out != out:
            raise self.error(
                f"the body gives {format_shape(out)} but the shortcut gives {format_shape(short_out)}; "
                "they must match to be added",
                (*yaml_path, "residual"),
                where,
            )
        add = Add()
        self.layers[index] = LayerInfo(
            index, path, "residual", shape, out, 0, add.macs([out, out], out), add, self.depth
        )
        self.last_path, self.last_row = path, index
        return ShapedMerge(self.layers[index], [body, shortcut], ("body", "shortcut")), out


def _projection(shape: Shape, out: Shape) -> Conv2d | None:
    """The strided 1×1 convolution that maps `shape` onto `out`, if one exists."""
    if len(shape) != 3 or len(out) != 3:
        return None
    for stride in range(1, max(shape[1:]) + 1):
        candidate = Conv2d(out_channels=out[0], kernel_size=1, stride=stride)
        if candidate.output_shape(shape) == out:
            return candidate
    return None


def infer_shapes(spec: Spec | str | Path) -> NetShape:
    """Infer every layer's output shape, parameter count and MACs."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    walker = _Walker(spec)
    root, out = walker.seq(spec.layers, tuple(spec.input), "layers", ("layers",), ())
    assert all(info is not None for info in walker.layers)
    return NetShape(spec, root, walker.layers, tuple(spec.input), out)
