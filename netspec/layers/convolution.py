"""Convolutions and resampling of images (channels×height×width)."""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from annotated_types import Gt
from pydantic import model_validator
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
    check_declared,
    count,
    format_pair,
    pair,
    register,
)
from netspec.layers.saved import Run, Tensor


def check_channels(channels: int, declared: int | None, out_channels: int, groups: int) -> None:
    """A convolution's channel rules: a written in_channels must match; groups must divide both sides."""
    check_declared("in_channels", declared, channels)
    for name, value in (("input channels", channels), ("out_channels", out_channels)):
        if value % groups:
            raise ShapeError(f"{name} {value} is not divisible by groups {groups}")


def window_out(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Out = floor((In + 2P − D·(K−1) − 1)/S) + 1, with torch's ceil_mode rule for pools."""
    span = size + 2 * padding - (dilation * (kernel - 1) + 1)
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    return out - 1 if (out - 1) * stride >= size + padding else out  # the last window must start inside


def window_shape(
    shape: Shape,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
) -> tuple[int, int]:
    """Output height and width of a sliding window (convolution or pooling) over a C×H×W input."""
    _, h, w = shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pair, (kernel_size, stride, padding, dilation))
    effective = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    padded = (h + 2 * ph, w + 2 * pw)
    if effective[0] > padded[0] or effective[1] > padded[1]:
        what = f"kernel_size {format_pair(kernel_size)}"
        if (dh, dw) != (1, 1):
            what = f"effective kernel size {format_pair(effective)} ({what}, dilation {format_pair(dilation)})"
        raise ShapeError(f"{what} is larger than its padded input {padded[0]}×{padded[1]}")
    return window_out(h, kh, sh, ph, dh, ceil_mode), window_out(w, kw, sw, pw, dw, ceil_mode)


@register
class Conv2d(LayerSpec):
    kind: Literal["conv2d"] = "conv2d"
    out_channels: Size
    kernel_size: SizeOrPair
    in_channels: Size | None = None
    stride: SizeOrPair = 1
    padding: NonNegativeOrPair | Literal["same", "valid"] = 0
    dilation: SizeOrPair = 1
    groups: Size = 1
    bias: Flag = True
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    attr: ClassVar[str] = "conv"
    torch_name: ClassVar[str] = "Conv2d"

    def _padding(self) -> int | tuple[int, int]:
        return 0 if self.padding == "valid" else self.padding  # type: ignore[return-value]

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        c, h, w = shape
        check_channels(c, self.in_channels, self.out_channels, self.groups)
        if self.padding == "same":
            if pair(self.stride) != (1, 1):
                raise ShapeError("padding 'same' needs stride 1 (torch does not support strided 'same')")
            return (self.out_channels, h, w)
        out_h, out_w = window_shape(shape, self.kernel_size, self.stride, self._padding(), self.dilation)
        return (self.out_channels, out_h, out_w)

    def _weights_per_output(self, shape: Shape) -> int:
        kh, kw = pair(self.kernel_size)
        return shape[0] // self.groups * kh * kw

    def num_params(self, shape: Shape) -> int:
        return self.out_channels * self._weights_per_output(shape) + (self.out_channels if self.bias else 0)

    def macs(self, shape: Shape, out: Shape) -> int:
        return count(out) * self._weights_per_output(shape)

    def saved_for_backward(self, run: Run) -> Tensor:
        return convolution(run, (self.out_channels, self._weights_per_output(run.shape)))

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(
            nn.Conv2d,
            shape[0],
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias,
        )


@register
class ConvTranspose2d(LayerSpec):
    """Out = (In − 1)·S − 2P + D·(K − 1) + output_padding + 1."""

    kind: Literal["conv_transpose2d"] = "conv_transpose2d"
    out_channels: Size
    kernel_size: SizeOrPair
    in_channels: Size | None = None
    stride: SizeOrPair = 1
    padding: NonNegativeOrPair = 0
    output_padding: NonNegativeOrPair = 0
    groups: Size = 1
    bias: Flag = True
    dilation: SizeOrPair = 1
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    attr: ClassVar[str] = "up"
    torch_name: ClassVar[str] = "ConvTranspose2d"

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        c, h, w = shape
        check_channels(c, self.in_channels, self.out_channels, self.groups)
        (kh, kw), (sh, sw), (ph, pw), (oh, ow), (dh, dw) = map(
            pair, (self.kernel_size, self.stride, self.padding, self.output_padding, self.dilation)
        )
        if (oh >= sh and oh >= dh) or (ow >= sw and ow >= dw):
            raise ShapeError(
                f"output_padding {format_pair(self.output_padding)} must be smaller than stride "
                f"{format_pair(self.stride)} or dilation {format_pair(self.dilation)}"
            )
        out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1
        out_w = (w - 1) * sw - 2 * pw + dw * (kw - 1) + ow + 1
        return (self.out_channels, out_h, out_w)

    def _weights_per_input(self) -> int:
        kh, kw = pair(self.kernel_size)
        return self.out_channels // self.groups * kh * kw

    def num_params(self, shape: Shape) -> int:
        return shape[0] * self._weights_per_input() + (self.out_channels if self.bias else 0)

    def macs(self, shape: Shape, out: Shape) -> int:
        return count(shape) * self._weights_per_input()  # every input element scatters into a K×K window

    def saved_for_backward(self, run: Run) -> Tensor:
        return convolution(run, (run.shape[0], self._weights_per_input()))

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(
            nn.ConvTranspose2d,
            shape[0],
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            groups=self.groups,
            bias=self.bias,
            dilation=self.dilation,
        )


def convolution(run: Run, weight_shape: tuple[int, ...]) -> Tensor:
    """A convolution saves its input and its weight (half-precision copies of both under AMP); its output takes
    the memory format its input suggests (channels_last in, channels_last out)."""
    x = run.lower(run.input)
    run.save(x, run.weight(weight_shape))
    out = run.output(x.dtype)
    if x.is_channels_last():
        n, c, h, w = out.shape
        out = run.new((n, h, w, c), x.dtype).permute(0, 3, 1, 2)
    return out


PositiveFloat = Annotated[float, Gt(0.0)]


@register
class Upsample(LayerSpec):
    """Resize by `scale_factor` or to `size` (exactly one of them)."""

    kind: Literal["upsample"] = "upsample"
    scale_factor: PositiveFloat | tuple[PositiveFloat, PositiveFloat] | None = None
    size: SizeOrPair | None = None
    mode: Literal["nearest", "bilinear"] = "nearest"
    align_corners: Flag | None = None
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    torch_name: ClassVar[str] = "Upsample"

    @model_validator(mode="after")
    def _one_of_scale_or_size(self) -> Upsample:
        if (self.scale_factor is None) == (self.size is None):
            raise ValueError("give exactly one of scale_factor and size")
        if self.align_corners is not None and self.mode == "nearest":
            raise ValueError("align_corners only applies to mode bilinear")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        if self.size is not None:
            return (shape[0], *pair(self.size))
        factor = self.scale_factor
        sh, sw = (factor, factor) if not isinstance(factor, tuple) else factor
        return (shape[0], math.floor(shape[1] * sh), math.floor(shape[2] * sw))

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.Upsample, self.size, self.scale_factor, self.mode, self.align_corners)
