"""Merges: several tensors in (the outputs of parallel branches, or named taps), one out."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Literal

import torch

from netspec.layers.base import (
    Combine,
    Dim,
    Flag,
    MergeMismatch,
    MergeSpec,
    Shape,
    ShapeError,
    axis,
    count,
    format_shape,
    register_merge,
)
from netspec.layers.linear import matmul
from netspec.layers.saved import Run, Tensor


def _same_rank(shapes: list[Shape]) -> None:
    for i, shape in enumerate(shapes[1:], 1):
        if len(shape) != len(shapes[0]):
            raise MergeMismatch(0, i, "ranks differ")


def _fold(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], xs: list[torch.Tensor]) -> torch.Tensor:
    """xs[0] op xs[1] op ...: a plain loop, which torch.compile unrolls."""
    out = xs[0]
    for x in xs[1:]:
        out = op(out, x)
    return out


@register_merge
class Concat(MergeSpec):
    kind: Literal["concat"] = "concat"
    # Like torch, `dim` counts the batch dimension: the default 1 is the channel (or feature, or token) axis.
    dim: Dim = 1

    def output_shape(self, shapes: list[Shape]) -> Shape:
        _same_rank(shapes)
        a = axis(self.dim, len(shapes[0]))
        rest = [s[:a] + s[a + 1 :] for s in shapes]
        for i, other in enumerate(rest[1:], 1):
            if other != rest[0]:
                reason = (
                    "spatial sizes must agree"
                    if len(shapes[0]) == 3 and a == 0
                    else f"all dimensions but dim {self.dim} must agree"
                )
                raise MergeMismatch(0, i, reason)
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        return tuple(out)

    def elementwise_ops(self, shapes: list[Shape], out: Shape) -> int:
        return 0

    def saved_for_backward(self, run: Run) -> Tensor:
        return run.output(run.promote(*run.inputs))  # a new contiguous tensor; saves nothing

    def build(self) -> Combine:
        return functools.partial(torch.cat, dim=self.dim)

    def code(self, names: list[str]) -> str:
        return f"torch.cat([{', '.join(names)}], dim={self.dim})"


def _broadcast(shapes: list[Shape]) -> Shape:
    """torch's broadcasting over equal ranks (each example's shape; the batch is the same for all): sizes agree
    or one of them is 1."""
    _same_rank(shapes)
    out = list(shapes[0])
    for i, shape in enumerate(shapes[1:], 1):
        for d, (a, b) in enumerate(zip(out, shape, strict=True)):
            if a != b and 1 not in (a, b):
                raise MergeMismatch(0, i, f"dimension {d + 1} differs ({a} vs {b}) and neither is 1 to broadcast")
            out[d] = max(a, b)
    return tuple(out)


def _term(name: str) -> str:
    """A branch's expression as an operand of - or @ (bracketed unless it is one name or call)."""
    return f"({name})" if " " in name else name


@register_merge
class Add(MergeSpec):
    """Elementwise sum with torch broadcasting (a 1×D bias over L×D tokens)."""

    kind: Literal["add"] = "add"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        return _broadcast(shapes)

    def build(self) -> Combine:
        return functools.partial(_fold, operator.add)

    def code(self, names: list[str]) -> str:
        return " + ".join(names)


@register_merge
class Subtract(MergeSpec):
    """The first branch minus the others, with torch broadcasting (PoolFormer's pool(x) - x)."""

    kind: Literal["subtract"] = "subtract"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        return _broadcast(shapes)

    def build(self) -> Combine:
        return functools.partial(_fold, operator.sub)

    def code(self, names: list[str]) -> str:
        return " - ".join([names[0], *map(_term, names[1:])])


@register_merge
class Multiply(MergeSpec):
    """Elementwise product with torch broadcasting (a C×1×1 gate scales a C×H×W map)."""

    kind: Literal["multiply"] = "multiply"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        return _broadcast(shapes)

    def saved_for_backward(self, run: Run) -> Tensor:
        """a * b keeps b for a's gradient and a for b's (a learned tensor is a parameter, not an activation)."""
        out = run.inputs[0]
        for x in run.inputs[1:]:
            run.save(x if out.requires_grad else None, out if x.requires_grad else None)
            out = run.pointwise(out, x)
        return out

    def build(self) -> Combine:
        return functools.partial(_fold, operator.mul)

    def code(self, names: list[str]) -> str:
        return " * ".join(names)


def _matmul_pair(xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.matmul(xs[0], xs[1])


def _matmul_transposed(xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.matmul(xs[0], xs[1].transpose(-2, -1))


@register_merge
class Matmul(MergeSpec):
    """torch.matmul of two computed tensors, ...×M×K @ ...×K×N (attention's q @ kᵀ and attn @ v); with
    `transpose_b` the second is ...×N×K and is transposed first. Leading dimensions broadcast."""

    kind: Literal["matmul"] = "matmul"
    transpose_b: Flag = False

    def _operands(self, shapes: list[Shape]) -> tuple[Shape, Shape]:
        if len(shapes) != 2:
            raise ShapeError(f"matmul takes 2 branches (a @ b), got {len(shapes)}")
        a, b = shapes
        if len(a) < 2 or len(b) < 2:
            raise ShapeError(
                f"matmul needs matrices (rank 2 or more per example), got {format_shape(a)} and {format_shape(b)}"
            )
        return a, (*b[:-2], b[-1], b[-2]) if self.transpose_b else b

    def output_shape(self, shapes: list[Shape]) -> Shape:
        a, b = self._operands(shapes)
        if a[-1] != b[-2]:
            written = f"{b[-1]}×{b[-2]} transposed" if self.transpose_b else f"{b[-2]}×{b[-1]}"
            raise MergeMismatch(
                0,
                1,
                f"{a[-2]}×{a[-1]} @ {written}: inner sizes {a[-1]} and {b[-2]} differ"
                + ("" if self.transpose_b else "; transpose_b: true multiplies by the transpose"),
            )
        lead = _broadcast([a[:-2], b[:-2]]) if len(a) > 2 or len(b) > 2 else ()
        return (*lead, a[-2], b[-1])

    def elementwise_ops(self, shapes: list[Shape], out: Shape) -> int:
        return 0

    def macs(self, shapes: list[Shape], out: Shape) -> int:
        a, _ = self._operands(shapes)
        return count(out) * a[-1]  # one multiply-accumulate per output element and inner index, as fvcore counts

    def saved_for_backward(self, run: Run) -> Tensor:
        """As `torch.matmul`: bmm on 3-d views of both operands (half-precision copies under autocast)."""
        a, b = run.inputs
        return matmul(run, run.lower(a), run.lower(b.transpose(-2, -1) if self.transpose_b else b))

    def build(self) -> Combine:
        return _matmul_transposed if self.transpose_b else _matmul_pair

    def code(self, names: list[str]) -> str:
        b = f"{_term(names[1])}.transpose(-2, -1)" if self.transpose_b else names[1]
        return f"torch.matmul({names[0]}, {b})"
