"""Merges: several tensors in (the outputs of parallel branches, or named taps), one out."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Literal

import torch

from netspec.layers.base import Combine, Dim, MergeMismatch, MergeSpec, Shape, axis, register_merge
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


@register_merge
class Add(MergeSpec):
    kind: Literal["add"] = "add"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        for i, shape in enumerate(shapes[1:], 1):
            if shape != shapes[0]:
                raise MergeMismatch(0, i, "shapes must agree to be added")
        return shapes[0]

    def build(self) -> Combine:
        return functools.partial(_fold, operator.add)

    def code(self, names: list[str]) -> str:
        return " + ".join(names)


@register_merge
class Multiply(MergeSpec):
    """Elementwise product with torch broadcasting (a C×1×1 gate scales a C×H×W map)."""

    kind: Literal["multiply"] = "multiply"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        _same_rank(shapes)
        out = list(shapes[0])
        for i, shape in enumerate(shapes[1:], 1):
            for d, (a, b) in enumerate(zip(out, shape, strict=True)):
                if a != b and 1 not in (a, b):
                    raise MergeMismatch(0, i, f"dimension {d + 1} differs ({a} vs {b}) and neither is 1 to broadcast")
                out[d] = max(a, b)
        return tuple(out)

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
