"""Pooling over the height and width of images."""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import nn

from netspec.layers.base import (
    Flag,
    LayerSpec,
    ModuleCall,
    NonNegativeOrPair,
    Shape,
    ShapeError,
    Size,
    SizeOrPair,
    call,
    format_pair,
    pair,
    register,
)
from netspec.layers.convolution import window_shape
from netspec.layers.saved import Run, Tensor


class _Pool2d(LayerSpec):
    kernel_size: SizeOrPair
    stride: SizeOrPair | None = None
    padding: NonNegativeOrPair = 0
    ceil_mode: Flag = False
    ranks: ClassVar[tuple[int, ...] | None] = (3,)

    def _dilation(self) -> int | tuple[int, int]:
        return 1

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        (kh, kw), (ph, pw) = pair(self.kernel_size), pair(self.padding)
        if ph > kh // 2 or pw > kw // 2:
            raise ShapeError(
                f"padding {format_pair(self.padding)} is more than half of kernel_size {format_pair(self.kernel_size)}"
            )
        stride = self.kernel_size if self.stride is None else self.stride
        out_h, out_w = window_shape(shape, self.kernel_size, stride, self.padding, self._dilation(), self.ceil_mode)
        return (shape[0], out_h, out_w)


@register
class MaxPool2d(_Pool2d):
    kind: Literal["maxpool2d"] = "maxpool2d"
    dilation: SizeOrPair = 1
    attr: ClassVar[str] = "maxpool"
    torch_name: ClassVar[str] = "MaxPool2d"

    def _dilation(self) -> int | tuple[int, int]:
        return self.dilation

    def saved_for_backward(self, run: Run) -> Tensor:
        """Its input and the int64 index of each output's maximum."""
        out = run.output()
        run.save(run.input, run.new(out.shape, "int64", requires_grad=False))
        return out

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.MaxPool2d, self.kernel_size, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode)


@register
class AvgPool2d(_Pool2d):
    kind: Literal["avgpool2d"] = "avgpool2d"
    count_include_pad: Flag = True
    divisor_override: Size | None = None
    attr: ClassVar[str] = "avgpool"
    torch_name: ClassVar[str] = "AvgPool2d"

    def saved_for_backward(self, run: Run) -> Tensor:
        run.save(run.input)
        return run.output()

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(
            nn.AvgPool2d,
            self.kernel_size,
            self.stride,
            self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
            divisor_override=self.divisor_override,
        )


@register
class AdaptiveAvgPool2d(LayerSpec):
    kind: Literal["adaptive_avgpool2d"] = "adaptive_avgpool2d"
    output_size: SizeOrPair = 1
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    attr: ClassVar[str] = "avgpool"
    torch_name: ClassVar[str] = "AdaptiveAvgPool2d"

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        return (shape[0], *pair(self.output_size))

    def saved_for_backward(self, run: Run) -> Tensor:
        """To 1×1 torch takes the mean (which keeps nothing); other sizes keep the input."""
        if pair(self.output_size) != (1, 1):
            run.save(run.input)
        return run.output()

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.AdaptiveAvgPool2d, self.output_size)
