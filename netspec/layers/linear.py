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

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.Linear, shape[-1], self.out_features, bias=self.bias)
