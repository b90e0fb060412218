"""Arithmetic on one tensor: a constant `scale`, `neg`, and the reductions `mean` and `sum` over dimensions.

None of them has parameters or MACs (a scale is an element-wise operation, as an add is), and none saves
anything for backward: the gradient of x * c is the incoming gradient times c, and a reduction's backward
needs only the input's shape.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from netspec.layers.base import Dim, Flag, LayerSpec, ModuleCall, Shape, ShapeError, axis, call, register
from netspec.layers.saved import Run, Tensor


class ScaleModule(nn.Module):
    """x * factor, a constant (LeViT's and EfficientFormer's key_dim ** -0.5)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


@register
class Scale(LayerSpec):
    """Multiply by a constant (an expression such as `"$key_dim ** -0.5"`); no parameter."""

    kind: Literal["scale"] = "scale"
    factor: float
    attr: ClassVar[str] = "scale"

    def saved_for_backward(self, run: Run) -> Tensor:
        return run.pointwise(run.input)  # a product with a number saves nothing

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(ScaleModule, self.factor)


class NegModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


@register
class Neg(LayerSpec):
    """-x."""

    kind: Literal["neg"] = "neg"
    attr: ClassVar[str] = "neg"

    def saved_for_backward(self, run: Run) -> Tensor:
        return run.pointwise(run.input)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(NegModule)


class ReduceModule(nn.Module):
    """x.mean(dims) or x.sum(dims) (dims count the batch, as torch does)."""

    def __init__(self, op: str, dims: tuple[int, ...], keepdim: bool = False) -> None:
        super().__init__()
        self.op, self.dims, self.keepdim = op, tuple(dims), keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(torch, self.op)(x, dim=self.dims, keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"op={self.op!r}, dims={self.dims}, keepdim={self.keepdim}"


class _Reduction(LayerSpec):
    """Reduce over `dims` (torch's numbering: 1 is the first dimension of an example; never the batch), keeping
    them as size 1 with `keepdim`."""

    dims: Annotated[list[Dim], Field(min_length=1)]
    keepdim: Flag = False
    op: ClassVar[str]
    float32_under_autocast: ClassVar[bool] = False  # on CUDA's autocast list of ops that run in float32

    def _axes(self, shape: Shape) -> list[int]:
        axes = [axis(d, len(shape), "dims") for d in self.dims]
        if len(set(axes)) != len(axes):
            raise ShapeError(f"dims {self.dims} name a dimension twice")
        if len(axes) == len(shape) and not self.keepdim:
            raise ShapeError(f"dims {self.dims} reduce every dimension of an example; keep one, or keepdim: true")
        return axes

    def output_shape(self, shape: Shape) -> Shape:
        axes = self._axes(shape)
        if self.keepdim:
            return tuple(1 if i in axes else n for i, n in enumerate(shape))
        return tuple(n for i, n in enumerate(shape) if i not in axes)

    def saved_for_backward(self, run: Run) -> Tensor:
        x = run.upcast(run.input) if self.float32_under_autocast else run.input  # a float32 copy, not saved
        return run.output(x.dtype)  # the backward needs only the input's shape

    def module_call(self, shape: Shape) -> ModuleCall:
        self._axes(shape)
        return call(ReduceModule, self.op, tuple(self.dims), keepdim=self.keepdim)


@register
class Mean(_Reduction):
    kind: Literal["mean"] = "mean"
    attr: ClassVar[str] = "mean"
    op: ClassVar[str] = "mean"


@register
class Sum(_Reduction):
    kind: Literal["sum"] = "sum"
    attr: ClassVar[str] = "sum"
    op: ClassVar[str] = "sum"
    float32_under_autocast: ClassVar[bool] = True
