"""Stage 3: a `Spec` -> every layer's shape, parameter count and MACs, without tensors.

The walk expands blocks and repeats, checks residual branches agree, and produces
a tree (`ShapedSeq`, `ShapedResidual`, `LayerInfo` leaves) that the compiler turns
into modules one-to-one. Errors name the layer's path and kind, the numbers, and
where its input came from: "(input 16×4×4 after layers[5])".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from netspec.layers import Conv2d, LayerSpec, Shape, ShapeError, format_shape
from netspec.source import YamlPath
from netspec.spec import BlockCall, Repeat, Residual, Spec, instantiate_block, load_spec


@dataclass
class LayerInfo:
    """One leaf layer with everything the summary table shows."""

    index: int
    path: str
    kind: str
    input_shape: Shape
    output_shape: Shape
    params: int
    macs: int
    layer: LayerSpec = field(repr=False)


@dataclass
class ShapedSeq:
    """Children applied in order (the spec itself, a block use, a repeat copy).

    Paths name layers as written: `layers[2]` is the third top-level entry and
    `layers[2].basic_block[0].residual[1]` the second layer of the residual body that
    is the first layer of the block `basic_block` used there; repeat copies are
    `repeat#0`, `repeat#1`, ...
    """

    children: list[ShapedNode]


@dataclass
class ShapedResidual:
    """body(x) + shortcut(x); shortcut None is the identity."""

    body: ShapedSeq
    shortcut: ShapedSeq | None


ShapedNode = Union[LayerInfo, ShapedSeq, ShapedResidual]  # noqa: UP007


@dataclass
class NetShape:
    """The result of shape inference for a whole spec."""

    spec: Spec
    root: ShapedSeq
    layers: list[LayerInfo]
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
class _Walker:
    spec: Spec
    layers: list[LayerInfo] = field(default_factory=list)
    # The path of the layer that produced the current tensor, for "(input ... after layers[5])".
    last_path: str = ""

    def error(self, message: str, yaml_path: YamlPath, where: str) -> Exception:
        return self.spec.source.error(message, yaml_path, where)

    def seq(
        self, entries: list[Any], shape: Shape, path: str, yaml_path: YamlPath, stack: tuple[str, ...]
    ) -> tuple[ShapedSeq, Shape]:
        children: list[ShapedNode] = []
        for i, entry in enumerate(entries):
            node, shape = self.entry(entry, shape, f"{path}[{i}]", (*yaml_path, i), stack)
            children.append(node)
        return ShapedSeq(children), shape

    def entry(
        self, entry: Any, shape: Shape, path: str, yaml_path: YamlPath, stack: tuple[str, ...]
    ) -> tuple[ShapedNode, Shape]:
        if isinstance(entry, LayerSpec):
            return self.leaf(entry, shape, path, yaml_path)
        if isinstance(entry, Repeat):
            copies: list[ShapedNode] = []
            for copy in range(entry.times):
                node, shape = self.seq(
                    entry.layers, shape, f"{path}.repeat#{copy}", (*yaml_path, "repeat", "layers"), stack
                )
                copies.append(node)
            return ShapedSeq(copies), shape
        if isinstance(entry, Residual):
            return self.residual(entry, shape, path, yaml_path, stack)
        assert isinstance(entry, BlockCall)
        where = f"{path} {entry.name}"
        if entry.name in stack:
            cycle = " → ".join((*stack[stack.index(entry.name) :], entry.name))
            raise self.error(f"block {entry.name} uses itself ({cycle})", yaml_path, where)
        body = instantiate_block(self.spec, entry, yaml_path, path)
        return self.seq(body, shape, f"{path}.{entry.name}", ("blocks", entry.name, "layers"), (*stack, entry.name))

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
        )
        self.layers.append(info)
        self.last_path = path
        return info, out

    def residual(
        self, entry: Residual, shape: Shape, path: str, yaml_path: YamlPath, stack: tuple[str, ...]
    ) -> tuple[ShapedResidual, Shape]:
        where = f"{path} residual"
        body, out = self.seq(entry.layers, shape, f"{path}.residual", (*yaml_path, "residual", "layers"), stack)
        shortcut: ShapedSeq | None
        if isinstance(entry.shortcut, list):
            shortcut, short_out = self.seq(
                entry.shortcut, shape, f"{path}.shortcut", (*yaml_path, "residual", "shortcut"), stack
            )
        elif entry.shortcut == "identity" or (entry.shortcut == "auto" and out == shape):
            shortcut, short_out = None, shape
        else:
            projection = _projection(shape, out)
            if projection is None:
                raise self.error(
                    f"no 1×1 convolution maps the input {format_shape(shape)} to the body's output "
                    f"{format_shape(out)}; give an explicit shortcut list",
                    (*yaml_path, "residual"),
                    where,
                )
            info, short_out = self.leaf(projection, shape, f"{path}.shortcut[0]", (*yaml_path, "residual", "shortcut"))
            shortcut = ShapedSeq([info])
        if short_out != out:
            raise self.error(
                f"the body gives {format_shape(out)} but the shortcut gives {format_shape(short_out)}; "
                "they must match to be added",
                (*yaml_path, "residual"),
                where,
            )
        self.last_path = path
        return ShapedResidual(body, shortcut), out


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
    return NetShape(spec, root, walker.layers, tuple(spec.input), out)
