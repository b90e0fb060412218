"""The layer kinds of the spec language: one small, self-contained class per kind.

A kind is a pydantic model whose fields are its arguments (named as in torch.nn)
and which knows three things about itself:

- ``output_shape(shape)``: the shape rule (raises `ShapeError` with the numbers);
- ``num_params(shape)`` and ``macs(shape, out)``: what the summary table shows;
- ``build(shape)``: the torch module, with its input size filled in.

Shapes never include the batch dimension. To add a kind, write one class here and
decorate it with ``@register``; nothing else in netspec needs to change.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Strict
from torch import nn

Shape = tuple[int, ...]

Size = Annotated[int, Strict(), Gt(0)]
NonNegative = Annotated[int, Strict(), Ge(0)]
SizeOrPair = Size | tuple[Size, Size]
NonNegativeOrPair = NonNegative | tuple[NonNegative, NonNegative]
Probability = Annotated[float, Ge(0.0), Le(1.0)]


class ShapeError(ValueError):
    """A layer cannot take its input shape; the message gives the numbers."""


def format_shape(shape: Shape) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def format_pair(value: int | tuple[int, int]) -> str:
    h, w = pair(value)
    return str(h) if h == w else f"{h}×{w}"


class LayerSpec(BaseModel):
    """Base of every layer kind. Subclasses set `kind` to a Literal default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    # Ranks of input this kind accepts (1: features, 3: channels×height×width).
    ranks: ClassVar[tuple[int, ...]] = (1, 2, 3)
    rank_hint: ClassVar[str] = ""

    def args(self) -> dict[str, Any]:
        """The arguments as written (without `kind`)."""
        return self.model_dump(exclude={"kind"})

    def check_rank(self, shape: Shape) -> None:
        if len(shape) not in self.ranks:
            wanted = " or ".join(_RANK_NAMES[r] for r in self.ranks)
            raise ShapeError(f"expects {wanted} input, got {format_shape(shape)}{self.rank_hint}")

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        return shape

    def num_params(self, shape: Shape) -> int:
        return 0

    def macs(self, shape: Shape, out: Shape) -> int:
        return 0

    def build(self, shape: Shape) -> nn.Module:
        raise NotImplementedError


_RANK_NAMES = {1: "a flat (features)", 2: "a channels×length", 3: "an image (channels×height×width)"}

LAYER_KINDS: dict[str, type[LayerSpec]] = {}


def register(cls: type[LayerSpec]) -> type[LayerSpec]:
    """Add a layer kind to the language under the default of its `kind` field."""
    name = cls.model_fields["kind"].default
    assert isinstance(name, str) and name not in LAYER_KINDS, name
    LAYER_KINDS[name] = cls
    return cls


def argument_names(cls: type[BaseModel]) -> list[str]:
    """The arguments of a kind (or composite), in the order they are declared."""
    return [name for name in cls.model_fields if name != "kind"]


def can_be_bare(cls: type[BaseModel]) -> bool:
    """True if the kind can be written as a bare name (`- relu`)."""
    return all(not cls.model_fields[name].is_required() for name in argument_names(cls))


def _check_declared(name: str, declared: int | None, inferred: int) -> None:
    if declared is not None and declared != inferred:
        raise ShapeError(f"{name} is {declared} but the input has {inferred}")


def _window_out(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Out = floor((In + 2P − D·(K−1) − 1)/S) + 1, with torch's ceil_mode rule for pools."""
    span = size + 2 * padding - (dilation * (kernel - 1) + 1)
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    return out - 1 if (out - 1) * stride >= size + padding else out  # the last window must start inside


def _window_shape(
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
    return _window_out(h, kh, sh, ph, dh, ceil_mode), _window_out(w, kw, sw, pw, dw, ceil_mode)


# --- convolution ---------------------------------------------------------------------------


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
    bias: Annotated[bool, Strict()] = True
    ranks: ClassVar[tuple[int, ...]] = (3,)

    def _padding(self) -> int | tuple[int, int]:
        return 0 if self.padding == "valid" else self.padding  # type: ignore[return-value]

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        c, h, w = shape
        _check_declared("in_channels", self.in_channels, c)
        for name, value in (("input channels", c), ("out_channels", self.out_channels)):
            if value % self.groups:
                raise ShapeError(f"{name} {value} is not divisible by groups {self.groups}")
        if self.padding == "same":
            if pair(self.stride) != (1, 1):
                raise ShapeError("padding 'same' needs stride 1 (torch does not support strided 'same')")
            return (self.out_channels, h, w)
        out_h, out_w = _window_shape(shape, self.kernel_size, self.stride, self._padding(), self.dilation)
        return (self.out_channels, out_h, out_w)

    def _weights_per_output(self, shape: Shape) -> int:
        kh, kw = pair(self.kernel_size)
        return shape[0] // self.groups * kh * kw

    def num_params(self, shape: Shape) -> int:
        return self.out_channels * self._weights_per_output(shape) + (self.out_channels if self.bias else 0)

    def macs(self, shape: Shape, out: Shape) -> int:
        return math.prod(out) * self._weights_per_output(shape)

    def build(self, shape: Shape) -> nn.Module:
        return nn.Conv2d(
            shape[0],
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias,
        )


# --- pooling -------------------------------------------------------------------------------


class _Pool2d(LayerSpec):
    kernel_size: SizeOrPair
    stride: SizeOrPair | None = None
    padding: NonNegativeOrPair = 0
    ceil_mode: Annotated[bool, Strict()] = False
    ranks: ClassVar[tuple[int, ...]] = (3,)

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
        out_h, out_w = _window_shape(shape, self.kernel_size, stride, self.padding, self._dilation(), self.ceil_mode)
        return (shape[0], out_h, out_w)


@register
class MaxPool2d(_Pool2d):
    kind: Literal["maxpool2d"] = "maxpool2d"
    dilation: SizeOrPair = 1

    def _dilation(self) -> int | tuple[int, int]:
        return self.dilation

    def build(self, shape: Shape) -> nn.Module:
        return nn.MaxPool2d(self.kernel_size, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode)


@register
class AvgPool2d(_Pool2d):
    kind: Literal["avgpool2d"] = "avgpool2d"
    count_include_pad: Annotated[bool, Strict()] = True
    divisor_override: Size | None = None

    def build(self, shape: Shape) -> nn.Module:
        return nn.AvgPool2d(
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
    ranks: ClassVar[tuple[int, ...]] = (3,)

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        return (shape[0], *pair(self.output_size))

    def build(self, shape: Shape) -> nn.Module:
        return nn.AdaptiveAvgPool2d(self.output_size)


# --- normalization and regularization -----------------------------------------------------


class _BatchNorm(LayerSpec):
    num_features: Size | None = None
    eps: Annotated[float, Gt(0.0)] = 1e-5
    momentum: Probability | None = 0.1
    affine: Annotated[bool, Strict()] = True
    track_running_stats: Annotated[bool, Strict()] = True

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        _check_declared("num_features", self.num_features, shape[0])
        return shape

    def num_params(self, shape: Shape) -> int:
        return 2 * shape[0] if self.affine else 0

    def build(self, shape: Shape) -> nn.Module:
        module = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return module(shape[0], self.eps, self.momentum, self.affine, self.track_running_stats)


@register
class BatchNorm(_BatchNorm):
    """BatchNorm1d or BatchNorm2d, chosen from the rank of the inferred input."""

    kind: Literal["batchnorm"] = "batchnorm"


@register
class BatchNorm1d(_BatchNorm):
    kind: Literal["batchnorm1d"] = "batchnorm1d"
    ranks: ClassVar[tuple[int, ...]] = (1, 2)


@register
class BatchNorm2d(_BatchNorm):
    kind: Literal["batchnorm2d"] = "batchnorm2d"
    ranks: ClassVar[tuple[int, ...]] = (3,)


@register
class Dropout(LayerSpec):
    kind: Literal["dropout"] = "dropout"
    p: Probability = 0.5

    def build(self, shape: Shape) -> nn.Module:
        return nn.Dropout(self.p)


@register
class Dropout2d(LayerSpec):
    kind: Literal["dropout2d"] = "dropout2d"
    p: Probability = 0.5
    ranks: ClassVar[tuple[int, ...]] = (3,)

    def build(self, shape: Shape) -> nn.Module:
        return nn.Dropout2d(self.p)


# --- dense ---------------------------------------------------------------------------------


@register
class Linear(LayerSpec):
    kind: Literal["linear"] = "linear"
    out_features: Size
    in_features: Size | None = None
    bias: Annotated[bool, Strict()] = True
    ranks: ClassVar[tuple[int, ...]] = (1,)
    rank_hint: ClassVar[str] = "; add a flatten layer before it"

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        _check_declared("in_features", self.in_features, shape[0])
        return (self.out_features,)

    def num_params(self, shape: Shape) -> int:
        return shape[0] * self.out_features + (self.out_features if self.bias else 0)

    def macs(self, shape: Shape, out: Shape) -> int:
        return shape[0] * self.out_features

    def build(self, shape: Shape) -> nn.Module:
        return nn.Linear(shape[0], self.out_features, bias=self.bias)


@register
class Flatten(LayerSpec):
    kind: Literal["flatten"] = "flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def build(self, shape: Shape) -> nn.Module:
        return nn.Flatten()


# --- activations (elementwise: the output shape is the input shape) ------------------------


class _Activation(LayerSpec):
    module: ClassVar[type[nn.Module]]

    def build(self, shape: Shape) -> nn.Module:
        return self.module(**self.args())


@register
class ReLU(_Activation):
    kind: Literal["relu"] = "relu"
    module: ClassVar[type[nn.Module]] = nn.ReLU


@register
class LeakyReLU(_Activation):
    kind: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: float = 0.01
    module: ClassVar[type[nn.Module]] = nn.LeakyReLU


@register
class Sigmoid(_Activation):
    kind: Literal["sigmoid"] = "sigmoid"
    module: ClassVar[type[nn.Module]] = nn.Sigmoid


@register
class Tanh(_Activation):
    kind: Literal["tanh"] = "tanh"
    module: ClassVar[type[nn.Module]] = nn.Tanh


@register
class GELU(_Activation):
    kind: Literal["gelu"] = "gelu"
    approximate: Literal["none", "tanh"] = "none"
    module: ClassVar[type[nn.Module]] = nn.GELU


@register
class SiLU(_Activation):
    kind: Literal["silu"] = "silu"
    module: ClassVar[type[nn.Module]] = nn.SiLU


@register
class ELU(_Activation):
    kind: Literal["elu"] = "elu"
    alpha: float = 1.0
    module: ClassVar[type[nn.Module]] = nn.ELU


class _SoftmaxLike(_Activation):
    # Like torch, `dim` counts the batch dimension: the default 1 is the class/channel axis.
    dim: Annotated[int, Strict(), Ge(-4), Lt(4)] = 1

    def output_shape(self, shape: Shape) -> Shape:
        rank = len(shape) + 1
        if not -rank <= self.dim < rank:
            raise ShapeError(f"dim {self.dim} is out of range for a batch of {format_shape(shape)} (rank {rank})")
        return shape


@register
class Softmax(_SoftmaxLike):
    kind: Literal["softmax"] = "softmax"
    module: ClassVar[type[nn.Module]] = nn.Softmax


@register
class LogSoftmax(_SoftmaxLike):
    kind: Literal["log_softmax"] = "log_softmax"
    module: ClassVar[type[nn.Module]] = nn.LogSoftmax


@register
class Identity(_Activation):
    kind: Literal["identity"] = "identity"
    module: ClassVar[type[nn.Module]] = nn.Identity
