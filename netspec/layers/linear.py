"""Dense layers: `linear` applies to the last dimension of any rank, as torch's does."""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import nn

from netspec.layers.base import (
    Flag,
    LayerSpec,
    ModuleCall,
    Shape,
    ShapeError,
    Size,
    call,
    count,
    format_shape,
    register,
)
from netspec.layers.saved import Run, Tensor


@register
class Linear(LayerSpec):
    kind: Literal["linear"] = "linear"
    out_features: Size
    in_features: Size | None = None
    bias: Flag = True
    attr: ClassVar[str] = "fc"
    torch_name: ClassVar[str] = "Linear"

    def output_shape(self, shape: Shape) -> Shape:
        if self.in_features is not None and self.in_features != shape[-1]:
            hint = "; add a flatten layer before it" if len(shape) > 1 and count(shape) == self.in_features else ""
            raise ShapeError(
                f"expects {self.in_features} features in the last dimension, got {format_shape(shape)}{hint}"
            )
        return (*shape[:-1], self.out_features)

    def num_params(self, shape: Shape) -> int:
        return shape[-1] * self.out_features + (self.out_features if self.bias else 0)

    def macs(self, shape: Shape, out: Shape) -> int:
        return count(shape[:-1]) * shape[-1] * self.out_features  # per token (or pixel) for rank > 1

    def saved_for_backward(self, run: Run) -> Tensor:
        return linear(run, run.input, self.out_features)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.Linear, shape[-1], self.out_features, bias=self.bias)


def linear(run: Run, x: Tensor, out_features: int) -> Tensor:
    """F.linear saves its input as a matrix (a view; a copy when a rank > 2 input is not contiguous)
    and its weight (half-precision copies of both under AMP)."""
    x = run.lower(x)
    run.save(x if x.dim <= 2 else run.reshape(x, -1, x.shape[-1]), run.weight((out_features, x.shape[-1])))
    return run.new((*x.shape[:-1], out_features), x.dtype)


def matmul(run: Run, a: Tensor, b: Tensor) -> Tensor:
    """torch.matmul of batched matrices (...×n×k @ ...×k×m): bmm on 3-d views of both (copies where the
    batch dimensions cannot be merged), each saved for the other's gradient. Autocast is the caller's."""
    a3, b3 = run.reshape(a, -1, *a.shape[-2:]), run.reshape(b, -1, *b.shape[-2:])
    run.save(a3 if b.requires_grad else None, b3 if a.requires_grad else None)
    return run.new((*a.shape[:-1], b.shape[-1]), run.promote(a, b))
