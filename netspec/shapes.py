"""Stage 4: the expanded graph -> every layer's shape, parameter count and MACs, without tensors.

The walk follows the graph (graph.py) in reading order, checks that the branches of every merge
(and residual) agree, decides each residual's automatic shortcut, and produces the one shaped
tree that every later stage reads: `ShapedSeq` (children with their input wiring), `ShapedMerge`
(parallel branches and how they combine) and `LayerInfo` leaves, one per row of the summary.
Errors name the layer's path and kind, the numbers, and where its input came from:
"(input 16×4×4 after layers[5])".
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from netspec.errors import SpecWarning
from netspec.graph import INPUT_NAME, BlockUse, Form, Graph, Layer, Merge, Role, Seq, expand
from netspec.layers import Conv2d, LayerSpec, MergeMismatch, MergeSpec, Shape, ShapeError, format_shape
from netspec.source import YamlPath
from netspec.spec import Spec

# Layers that keep the layout of their input (an image stays channels × height × width).
_KEEPS_LAYOUT = {
    "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "mish", "sigmoid", "tanh", "softplus",
    "hardswish", "hardsigmoid", "prelu", "dropout", "identity", "stochastic_depth",
}  # fmt: skip
# Layers whose output is an image: channels × height × width.
_SPATIAL = {
    "conv2d", "conv_transpose2d", "maxpool2d", "avgpool2d", "adaptive_avgpool2d", "batchnorm", "batchnorm2d",
    "groupnorm", "layernorm2d", "dropout2d", "upsample", "channel_shuffle",
}  # fmt: skip


def _linear_on_image(shape: Shape, out: Shape) -> str:
    return (
        f"it acts on the last dimension of {format_shape(shape)}, so the output is {format_shape(out)}; add "
        "`- flatten` before it if you meant a classifier"
    )


def _attention_on_image(shape: Shape, out: Shape) -> str:
    c, h, w = shape
    return (
        f"it reads {format_shape(shape)} as {c} groups of {h} tokens of {w} features (G×L×D); if the {h}×{w} "
        "positions are the tokens, make them first (flatten: {start_dim: 2} and transpose: {dim0: 1, dim1: 2})"
    )


# Kinds that are valid on an image (C×H×W) but almost always meant something else when they read one straight
# from a convolution, pooling or normalization: what they do then. `linear` also from the spec's input; attention
# not (a spec's G×L×D input is grouped tokens, as MobileViT's).
_IMAGE_SLIPS: dict[str, tuple[Callable[[Shape, Shape], str], bool]] = {
    "linear": (_linear_on_image, True),
    "multihead_attention": (_attention_on_image, False),
}


@dataclass
class LayerInfo:
    """One row of the summary: a layer, or the merge that combines parallel branches."""

    index: int
    path: str
    kind: str
    input_shape: Shape
    output_shape: Shape
    params: int
    macs: int  # multiply-accumulates of convolutions, linear layers and attention matmuls
    layer: LayerSpec | MergeSpec = field(repr=False)
    depth: int = 0  # how many merges it sits inside, for the indented table
    name: str | None = None  # the tap name (`as`) of the output this row produces
    reads: tuple[str, ...] = ()  # the tap names (`from`) this row reads instead of the previous output
    elementwise: int = 0  # element-wise operations of a merge (add, multiply); not MACs
    attr: str | None = None  # the attribute of its module (or learned tensor) in the enclosing module
    written: dict[str, Any] | None = field(default=None, repr=False)  # its arguments as its block writes them
    yaml_path: YamlPath = field(default=(), repr=False)

    @property
    def is_merge(self) -> bool:
        return isinstance(self.layer, MergeSpec)

    @property
    def is_tensor(self) -> bool:
        return isinstance(self.layer, LayerSpec) and self.layer.is_tensor


@dataclass
class ShapedSeq:
    """Children applied in order (the spec itself, a block use, a repeat and its copies, a branch).

    `sources[k]` says where child k reads its input: None for the previous child's output (the
    sequence's input for child 0), else positions in the sequence's values, where 0 is the
    sequence's input and j + 1 the output of child j (a tap). `form` is how the compiled network
    materializes it (graph.py: scope, sequential, single, flat, empty, repeat).

    Paths name layers as written: `layers[2]` is the third top-level entry,
    `layers[2].basic_block[0].residual[1]` the second layer of the residual body that is the first
    layer of the block `basic_block` used there, `layers[4].branch[1][0]` the first layer of branch 1
    of the merge at layers[4]; repeat copies are `repeat#0`, `repeat#1`, ...
    """

    children: list[ShapedNode]
    sources: list[tuple[int, ...] | None] = field(default_factory=list)
    names: list[str | None] = field(default_factory=list)  # each child's tap name (`as`), if any
    label: str | None = None  # a block use ("inception c1=64, ...") or a repeat ("repeat ×4")
    role: Role = Role.BRANCH
    form: Form = Form.EMPTY
    attr: str | None = None
    block: BlockUse | None = None
    path: str = ""
    input_shape: Shape = ()
    times_written: Any = None  # a repeat's `times` as written in a block body (`$depth`)

    @property
    def is_chain(self) -> bool:
        """True when every child reads the previous one's output."""
        return all(source is None for source in self.sources)


@dataclass
class ShapedMerge:
    """Parallel branches combined by a merge kind (concat, add, multiply; residual is an add).

    With one input every branch reads it; with several (`from: [a, b]`) branch i reads input i.
    An empty branch is the identity. `names` are the branches' names (body/shortcut, branch1, ...).
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
    warnings: list[str] = field(default_factory=list)  # SpecWarning messages, one per place in the spec

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

    @property
    def elementwise(self) -> int:
        return sum(info.elementwise for info in self.layers)


@dataclass
class _Walker:
    spec: Spec
    layers: list[Any] = field(default_factory=list)
    # The path of the layer that produced the current tensor, for "(input ... after layers[5])".
    last_path: str = ""
    depth: int = 0
    last_row: int = -1  # the row whose output is the current tensor
    warnings: dict[YamlPath, str] = field(default_factory=dict)  # one per place in the spec (repeat copies share)

    def error(self, message: str, yaml_path: YamlPath, where: str) -> Exception:
        return self.spec.source.error(message, yaml_path, where)

    def seq(self, seq: Seq, shape: Shape) -> tuple[ShapedSeq, Shape]:
        values, paths, rows = [shape], [self.last_path], [self.last_row]
        tap_names = [INPUT_NAME, *(n or "" for n in seq.names)]
        children: list[ShapedNode] = []
        for k, child in enumerate(seq.children):
            source = seq.sources[k]
            if source is None:
                in_shapes = [values[-1]]
            else:
                in_shapes = [values[j] for j in source]
                self.last_path, self.last_row = paths[source[-1]], rows[source[-1]]
            first_row = len(self.layers)
            node, out = self.node(child, in_shapes)
            if source is not None and first_row < len(self.layers):
                self.layers[first_row].reads = tuple(tap_names[j] for j in source)
            children.append(node)
            values.append(out)
            paths.append(self.last_path)
            rows.append(self.last_row)
            if seq.names[k] is not None and self.last_row >= 0:
                self.layers[self.last_row].name = seq.names[k]
        shaped = ShapedSeq(
            children, list(seq.sources), list(seq.names), seq.label, seq.role, seq.form, seq.attr, seq.block,
            seq.path, shape,
        )  # fmt: skip
        return shaped, values[-1]

    def node(self, node: Any, in_shapes: list[Shape]) -> tuple[ShapedNode, Shape]:
        if isinstance(node, Merge):
            return self.merge(node, in_shapes)
        if isinstance(node, Layer):
            return self.leaf(node, node.layer, in_shapes[0])  # type: ignore[arg-type]
        assert isinstance(node, Seq)
        if node.role != Role.REPEAT:
            return self.seq(node, in_shapes[0])
        shape, copies = in_shapes[0], []
        for copy in node.children:
            shaped, shape = self.seq(copy, shape)  # type: ignore[arg-type]
            copies.append(shaped)
        repeat = ShapedSeq(
            copies, list(node.sources), list(node.names), node.label, node.role, node.form, node.attr, None,
            node.path, in_shapes[0], node.times_written,
        )  # fmt: skip
        return repeat, shape

    def leaf(self, node: Layer, layer: LayerSpec, shape: Shape) -> tuple[LayerInfo, Shape]:
        where = f"{node.path} {layer.kind}"
        try:
            out = layer.output_shape(shape)
        except ShapeError as exc:
            origin = f"after {self.last_path}" if self.last_path else "from the spec's input"
            raise self.error(f"{exc} (input {format_shape(shape)} {origin})", node.yaml_path, where) from None
        if any(d < 1 for d in out):
            raise self.error(
                f"output {format_shape(out)} is empty (input {format_shape(shape)})", node.yaml_path, where
            )
        if layer.kind in _IMAGE_SLIPS and len(shape) == 3 and node.yaml_path not in self.warnings:
            self._image_slip(node, layer.kind, shape, out)
        info = LayerInfo(
            index=len(self.layers),
            path=node.path,
            kind=layer.kind,
            input_shape=shape,
            output_shape=out,
            params=layer.num_params(shape),
            macs=layer.macs(shape, out),
            layer=layer,
            depth=self.depth,
            attr=node.attr,
            written=node.written,
            yaml_path=node.yaml_path,
        )
        self.layers.append(info)
        self.last_path, self.last_row = node.path, info.index
        return info, out

    def _image_slip(self, node: Layer, kind: str, shape: Shape, out: Shape) -> None:
        """Warn when a linear reads an image (channels × height × width) straight from a convolution, pooling
        or normalization, or from the spec's input: valid torch (it acts on the last dimension), but almost
        always a missing flatten; likewise attention (it would attend within each channel's rows)."""
        what, from_input = _IMAGE_SLIPS[kind]
        row = self.last_row
        while row >= 0 and self.layers[row] is not None and self.layers[row].kind in _KEEPS_LAYOUT:
            before = self.layers[row - 1] if row > 0 else None
            if before is None or before.output_shape != self.layers[row].input_shape:
                row = -2  # not a plain chain: leave it alone
                break
            row -= 1
        if row >= 0 and (self.layers[row] is None or self.layers[row].kind not in _SPATIAL):
            return
        if row == -2 or (row == -1 and (self.last_path or not from_input)):
            return
        after = f"follows {self.layers[row].kind} at {self.layers[row].path}" if row >= 0 else "reads the spec's input"
        mark = self.spec.source.locate(node.yaml_path)
        at = f" ({self.spec.source.file}:{mark[0]})" if self.spec.source.file and mark else ""
        self.warnings[node.yaml_path] = f"{kind} at {node.path}{at} {after}: {what(shape, out)}"

    def _reserve_row(self) -> int:
        """A merge's row comes before its branches' rows; its numbers are known only after them."""
        self.layers.append(None)
        return len(self.layers) - 1

    def merge(self, merge: Merge, in_shapes: list[Shape]) -> tuple[ShapedMerge, Shape]:
        where, origin = f"{merge.path} {merge.kind}", (self.last_path, self.last_row)
        index = self._reserve_row()
        residual = merge.kind == "residual"
        self.depth += 1
        branches: list[ShapedSeq] = []
        outs: list[Shape] = []
        for b, branch in enumerate(merge.branches):
            shape = in_shapes[b] if len(in_shapes) > 1 else in_shapes[0]
            self.last_path, self.last_row = origin
            auto = branch.children[0] if branch.children and isinstance(branch.children[0], Layer) else None
            if residual and auto is not None and auto.layer is None:
                shaped, out = self.shortcut(merge, branch, auto, shape, outs[0])
            else:
                shaped, out = self.seq(branch, shape)
            branches.append(shaped)
            outs.append(out)
        self.depth -= 1
        if residual and outs[1] != outs[0]:
            raise self.error(
                f"the body gives {format_shape(outs[0])} but the shortcut gives {format_shape(outs[1])}; "
                "they must match to be added",
                (*merge.yaml_path, "residual"),
                where,
            )
        try:
            out = merge.op.output_shape(outs)
        except MergeMismatch as exc:
            listing = ", ".join(f"{b.path} {format_shape(o)}" for b, o in zip(merge.branches, outs, strict=True))
            raise self.error(
                f"branch {exc.first} gives {format_shape(outs[exc.first])} but branch {exc.second} gives "
                f"{format_shape(outs[exc.second])} ({exc.reason}); branches: {listing}",
                merge.yaml_path,
                where,
            ) from None
        except ShapeError as exc:
            raise self.error(
                f"{exc} (branches give {', '.join(map(format_shape, outs))})", merge.yaml_path, where
            ) from None
        self.layers[index] = LayerInfo(
            index, merge.path, merge.kind, in_shapes[0], out, 0, merge.op.macs(outs, out), merge.op, self.depth,
            elementwise=merge.op.elementwise_ops(outs, out), yaml_path=merge.yaml_path,
        )  # fmt: skip
        self.last_path, self.last_row = merge.path, index
        return ShapedMerge(self.layers[index], branches, merge.branch_names), out

    def shortcut(self, merge: Merge, branch: Seq, auto: Layer, shape: Shape, body: Shape) -> tuple[ShapedSeq, Shape]:
        """A residual's automatic shortcut: the identity when the body keeps the shape (`auto`), else the strided
        1×1 convolution that maps the input onto the body's output."""
        if auto.shortcut == "auto" and body == shape:
            return ShapedSeq([], [], [], None, Role.BRANCH, Form.EMPTY, None, None, branch.path, shape), shape
        projection = _projection(shape, body)
        if projection is None:
            raise self.error(
                f"no 1×1 convolution maps the input {format_shape(shape)} to the body's output "
                f"{format_shape(body)}; give an explicit shortcut list",
                (*merge.yaml_path, "residual"),
                f"{merge.path} residual",
            )
        info, out = self.leaf(auto, projection, shape)
        return ShapedSeq([info], [None], [None], None, Role.BRANCH, Form.SINGLE, None, None, branch.path, shape), out


def _projection(shape: Shape, out: Shape) -> Conv2d | None:
    """The strided 1×1 convolution that maps `shape` onto `out`, if one exists."""
    if len(shape) != 3 or len(out) != 3:
        return None
    for stride in range(1, max(shape[1:]) + 1):
        candidate = Conv2d(out_channels=out[0], kernel_size=1, stride=stride)
        if candidate.output_shape(shape) == out:
            return candidate
    return None


def infer_shapes(spec: Spec | Graph | str | Path | dict[str, Any]) -> NetShape:
    """Infer every layer's output shape, parameter count and MACs."""
    graph = spec if isinstance(spec, Graph) else expand(spec)
    walker = _Walker(graph.spec)
    root, out = walker.seq(graph.root, tuple(graph.spec.input))
    assert all(info is not None for info in walker.layers)
    for message in walker.warnings.values():
        warnings.warn(message, SpecWarning, stacklevel=2)
    return NetShape(graph.spec, root, walker.layers, tuple(graph.spec.input), out, list(walker.warnings.values()))
