"""The layer kinds of the spec language: one small, self-contained class per kind.

A kind is a pydantic model whose fields are its arguments (named as in torch.nn)
and which knows three things about itself:

- ``output_shape(shape)``: the shape rule (raises `ShapeError` with the numbers);
- ``num_params(shape)`` and ``macs(shape, out)``: what the summary table shows;
- ``build(shape)``: the torch module, with its input size filled in.

Shapes never include the batch dimension. To add a kind, write one class here and
decorate it with ``@register``; nothing else in netspec needs to change.

Merges (``concat``, ``add``, ``multiply``) are the kinds that take several tensors:
``output_shape(shapes)``, ``macs(shapes, out)`` and ``build()`` of a module whose
forward takes the branch outputs. They are registered with ``@register_merge``.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Strict, model_validator
from torch import nn

Shape = tuple[int, ...]
Combine = Callable[[list[torch.Tensor]], torch.Tensor]

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


@dataclass(frozen=True)
class ModuleCall:
    """`cls(*args, **kwargs)`: how a kind makes its module, kept as data so that it can also be written as code."""

    cls: type[nn.Module]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        return self.cls(*self.args, **self.kwargs)


def call(cls: type[nn.Module], *args: Any, **kwargs: Any) -> ModuleCall:
    return ModuleCall(cls, args, kwargs)


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

    def module_call(self, shape: Shape) -> ModuleCall:
        """The torch module for an input of `shape`, as a constructor call (export prints it as code)."""
        raise NotImplementedError

    def build(self, shape: Shape) -> nn.Module:
        return self.module_call(shape).build()


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


def _check_channels(channels: int, declared: int | None, out_channels: int, groups: int) -> None:
    """A convolution's channel rules: a written in_channels must match; groups must divide both sides."""
    _check_declared("in_channels", declared, channels)
    for name, value in (("input channels", channels), ("out_channels", out_channels)):
        if value % groups:
            raise ShapeError(f"{name} {value} is not divisible by groups {groups}")


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
        _check_channels(c, self.in_channels, self.out_channels, self.groups)
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
    bias: Annotated[bool, Strict()] = True
    dilation: SizeOrPair = 1
    ranks: ClassVar[tuple[int, ...]] = (3,)

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        c, h, w = shape
        _check_channels(c, self.in_channels, self.out_channels, self.groups)
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
        return math.prod(shape) * self._weights_per_input()  # every input element scatters into a K×K window

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


@register
class Upsample(LayerSpec):
    """Resize by `scale_factor` or to `size` (exactly one of them)."""

    kind: Literal["upsample"] = "upsample"
    scale_factor: Annotated[float, Gt(0.0)] | tuple[Annotated[float, Gt(0.0)], Annotated[float, Gt(0.0)]] | None = None
    size: SizeOrPair | None = None
    mode: Literal["nearest", "bilinear"] = "nearest"
    align_corners: Annotated[bool, Strict()] | None = None
    ranks: ClassVar[tuple[int, ...]] = (3,)

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

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.MaxPool2d, self.kernel_size, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode)


@register
class AvgPool2d(_Pool2d):
    kind: Literal["avgpool2d"] = "avgpool2d"
    count_include_pad: Annotated[bool, Strict()] = True
    divisor_override: Size | None = None

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
    ranks: ClassVar[tuple[int, ...]] = (3,)

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        return (shape[0], *pair(self.output_size))

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.AdaptiveAvgPool2d, self.output_size)


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

    def module_call(self, shape: Shape) -> ModuleCall:
        module = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return call(module, shape[0], self.eps, self.momentum, self.affine, self.track_running_stats)


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
class GroupNorm(LayerSpec):
    kind: Literal["groupnorm"] = "groupnorm"
    num_groups: Size
    num_channels: Size | None = None
    eps: Annotated[float, Gt(0.0)] = 1e-5
    affine: Annotated[bool, Strict()] = True
    ranks: ClassVar[tuple[int, ...]] = (2, 3)

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        _check_declared("num_channels", self.num_channels, shape[0])
        if shape[0] % self.num_groups:
            raise ShapeError(f"{shape[0]} channels are not divisible by num_groups {self.num_groups}")
        return shape

    def num_params(self, shape: Shape) -> int:
        return 2 * shape[0] if self.affine else 0

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.GroupNorm, self.num_groups, shape[0], self.eps, self.affine)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an N×C×H×W batch (as ConvNeXt and timm use it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


@register
class LayerNorm(LayerSpec):
    """Over the features of a vector, or over the channels at each position of an image."""

    kind: Literal["layernorm"] = "layernorm"
    eps: Annotated[float, Gt(0.0)] = 1e-5
    elementwise_affine: Annotated[bool, Strict()] = True
    bias: Annotated[bool, Strict()] = True
    ranks: ClassVar[tuple[int, ...]] = (1, 3)

    def num_params(self, shape: Shape) -> int:
        return shape[0] * (int(self.elementwise_affine) + int(self.elementwise_affine and self.bias))

    def module_call(self, shape: Shape) -> ModuleCall:
        module = LayerNorm2d if len(shape) == 3 else nn.LayerNorm
        return call(module, shape[0], self.eps, self.elementwise_affine, bias=self.bias)


@register
class Dropout(LayerSpec):
    kind: Literal["dropout"] = "dropout"
    p: Probability = 0.5

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.Dropout, self.p)


@register
class Dropout2d(LayerSpec):
    kind: Literal["dropout2d"] = "dropout2d"
    p: Probability = 0.5
    ranks: ClassVar[tuple[int, ...]] = (3,)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.Dropout2d, self.p)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016), as torchvision.ops.StochasticDepth computes it."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.dim() - 1) if self.mode == "row" else [1] * x.dim()
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"


@register
class StochasticDepth(LayerSpec):
    """Drop path: zero a whole example's branch with probability p while training (identity at eval).

    Put it last in a residual body; `mode: row` drops per example, `batch` the whole batch.
    """

    kind: Literal["stochastic_depth"] = "stochastic_depth"
    p: Probability = 0.1
    mode: Literal["row", "batch"] = "row"

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(DropPath, self.p, self.mode)


class ChannelShuffleModule(nn.Module):
    """ShuffleNet's channel shuffle written with view/transpose (traceable by torch.compile and ONNX)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


@register
class ChannelShuffle(LayerSpec):
    kind: Literal["channel_shuffle"] = "channel_shuffle"
    groups: Size
    ranks: ClassVar[tuple[int, ...]] = (3,)

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        if shape[0] % self.groups:
            raise ShapeError(f"{shape[0]} channels are not divisible by groups {self.groups}")
        return shape

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(ChannelShuffleModule, self.groups)


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

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.Linear, shape[0], self.out_features, bias=self.bias)


@register
class Flatten(LayerSpec):
    kind: Literal["flatten"] = "flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.Flatten)


# --- activations (elementwise: the output shape is the input shape) ------------------------


class _Activation(LayerSpec):
    module: ClassVar[type[nn.Module]]

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(self.module, **self.args())


@register
class ReLU(_Activation):
    kind: Literal["relu"] = "relu"
    module: ClassVar[type[nn.Module]] = nn.ReLU


@register
class ReLU6(_Activation):
    kind: Literal["relu6"] = "relu6"
    module: ClassVar[type[nn.Module]] = nn.ReLU6


@register
class Hardswish(_Activation):
    kind: Literal["hardswish"] = "hardswish"
    module: ClassVar[type[nn.Module]] = nn.Hardswish


@register
class Hardsigmoid(_Activation):
    kind: Literal["hardsigmoid"] = "hardsigmoid"
    module: ClassVar[type[nn.Module]] = nn.Hardsigmoid


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


# --- merges: several tensors in, one out ---------------------------------------------------


class MergeMismatch(ShapeError):
    """Inputs `first` and `second` of a merge cannot be combined; the walker names and shows both."""

    def __init__(self, first: int, second: int, reason: str) -> None:
        super().__init__(reason)
        self.first, self.second, self.reason = first, second, reason


class MergeSpec(BaseModel):
    """Base of every merge kind: how the outputs of parallel branches become one tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str

    def args(self) -> dict[str, Any]:
        return self.model_dump(exclude={"kind"})

    def output_shape(self, shapes: list[Shape]) -> Shape:
        raise NotImplementedError

    def macs(self, shapes: list[Shape], out: Shape) -> int:
        return (len(shapes) - 1) * math.prod(out)  # one add or multiply per output element and extra input

    def build(self) -> Combine:
        """The function that combines the list of branch outputs (plain, so torch.compile traces it)."""
        raise NotImplementedError

    def code(self, names: list[str]) -> str:
        """The same combination as a Python expression over tensors `names` (for `netspec export`)."""
        raise NotImplementedError


MERGE_KINDS: dict[str, type[MergeSpec]] = {}


def register_merge(cls: type[MergeSpec]) -> type[MergeSpec]:
    name = cls.model_fields["kind"].default
    assert isinstance(name, str) and name not in MERGE_KINDS and name not in LAYER_KINDS, name
    MERGE_KINDS[name] = cls
    return cls


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
    # Like torch, `dim` counts the batch dimension: the default 1 is the channel (or feature) axis.
    dim: Annotated[int, Strict(), Ge(-4), Lt(4)] = 1

    def _axis(self, rank: int) -> int:
        axis = self.dim if self.dim >= 0 else self.dim + rank + 1
        if not 1 <= axis <= rank:
            raise ShapeError(f"dim {self.dim} is not a dimension of a batch of rank {rank + 1} (0 is the batch)")
        return axis - 1

    def output_shape(self, shapes: list[Shape]) -> Shape:
        _same_rank(shapes)
        axis = self._axis(len(shapes[0]))
        rest = [s[:axis] + s[axis + 1 :] for s in shapes]
        for i, other in enumerate(rest[1:], 1):
            if other != rest[0]:
                reason = (
                    "spatial sizes must agree"
                    if len(shapes[0]) == 3 and axis == 0
                    else (f"all dimensions but dim {self.dim} must agree")
                )
                raise MergeMismatch(0, i, reason)
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return tuple(out)

    def macs(self, shapes: list[Shape], out: Shape) -> int:
        return 0

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

    def build(self) -> Combine:
        return functools.partial(_fold, operator.mul)

    def code(self, names: list[str]) -> str:
        return " * ".join(names)
