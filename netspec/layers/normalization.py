"""Normalization layers: batch, group and layer norm."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from annotated_types import Gt
from torch import nn

from netspec.layers.base import (
    Flag,
    LayerSpec,
    ModuleCall,
    Probability,
    Shape,
    ShapeError,
    Size,
    call,
    check_declared,
    register,
)
from netspec.layers.saved import Run, Tensor

Eps = Annotated[float, Gt(0.0)]


class _BatchNorm(LayerSpec):
    num_features: Size | None = None
    eps: Eps = 1e-5
    momentum: Probability | None = 0.1
    affine: Flag = True
    track_running_stats: Flag = True
    attr: ClassVar[str] = "bn"

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        check_declared("num_features", self.num_features, shape[0])
        return shape

    def num_params(self, shape: Shape) -> int:
        return 2 * shape[0] if self.affine else 0

    def saved_for_backward(self, run: Run) -> Tensor:
        """Its input and the batch's per-channel mean and inverse std (besides its weight and running
        statistics, which are module state)."""
        c = run.shape[0]
        if self.track_running_stats:
            run.buffer((c,)), run.buffer((c,)), run.buffer((), "int64")  # running mean, var, batches tracked
        run.save(run.input, *(run.new((c,), "float32", requires_grad=False) for _ in range(2)))
        return run.pointwise(run.input)

    def module_call(self, shape: Shape) -> ModuleCall:
        module = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return call(module, shape[0], self.eps, self.momentum, self.affine, self.track_running_stats)


@register
class BatchNorm(_BatchNorm):
    """BatchNorm1d or BatchNorm2d, chosen from the rank of the inferred input."""

    kind: Literal["batchnorm"] = "batchnorm"
    ranks: ClassVar[tuple[int, ...] | None] = (1, 2, 3)


@register
class BatchNorm1d(_BatchNorm):
    kind: Literal["batchnorm1d"] = "batchnorm1d"
    ranks: ClassVar[tuple[int, ...] | None] = (1, 2)
    torch_name: ClassVar[str] = "BatchNorm1d"


@register
class BatchNorm2d(_BatchNorm):
    kind: Literal["batchnorm2d"] = "batchnorm2d"
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    torch_name: ClassVar[str] = "BatchNorm2d"


@register
class GroupNorm(LayerSpec):
    kind: Literal["groupnorm"] = "groupnorm"
    num_groups: Size
    num_channels: Size | None = None
    eps: Eps = 1e-5
    affine: Flag = True
    ranks: ClassVar[tuple[int, ...] | None] = (2, 3)
    attr: ClassVar[str] = "gn"
    torch_name: ClassVar[str] = "GroupNorm"

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        check_declared("num_channels", self.num_channels, shape[0])
        if shape[0] % self.num_groups:
            raise ShapeError(f"{shape[0]} channels are not divisible by num_groups {self.num_groups}")
        return shape

    def num_params(self, shape: Shape) -> int:
        return 2 * shape[0] if self.affine else 0

    def saved_for_backward(self, run: Run) -> Tensor:
        """Its input and each group's mean and inverse std (float32)."""
        x = run.upcast(run.input)
        run.save(x, *(run.new((run.batch, self.num_groups), "float32", requires_grad=False) for _ in range(2)))
        return run.pointwise(x)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.GroupNorm, self.num_groups, shape[0], self.eps, self.affine)


@register
class LayerNorm(LayerSpec):
    """torch's LayerNorm over the last dimension, for any rank: the features of a vector or of every token
    (ViT), or the channels of a channels-last image (ConvNeXt after `permute`)."""

    kind: Literal["layernorm"] = "layernorm"
    normalized_shape: Size | None = None
    eps: Eps = 1e-5
    elementwise_affine: Flag = True
    bias: Flag = True
    attr: ClassVar[str] = "norm"
    torch_name: ClassVar[str] = "LayerNorm"

    def output_shape(self, shape: Shape) -> Shape:
        check_declared("normalized_shape", self.normalized_shape, shape[-1])
        return shape

    def num_params(self, shape: Shape) -> int:
        return shape[-1] * (int(self.elementwise_affine) + int(self.elementwise_affine and self.bias))

    def saved_for_backward(self, run: Run) -> Tensor:
        return layer_norm(run, run.input)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.LayerNorm, shape[-1], self.eps, self.elementwise_affine, bias=self.bias)


def layer_norm(run: Run, x: Tensor) -> Tensor:
    """layer_norm over the last dimension saves its input as given (a view stays a view) and each
    row's mean and inverse std (float32); its output is contiguous whatever the input's layout."""
    x = run.upcast(x)
    stats = (*x.shape[:-1], 1)
    run.save(x, *(run.new(stats, "float32", requires_grad=False) for _ in range(2)))
    return run.new(x.shape, x.dtype)


class LayerNorm2dModule(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an N×C×H×W batch (as ConvNeXt and timm use it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


@register
class LayerNorm2d(LayerSpec):
    """LayerNorm over the channels at each pixel of a C×H×W image (torchvision's and timm's LayerNorm2d)."""

    kind: Literal["layernorm2d"] = "layernorm2d"
    num_channels: Size | None = None
    eps: Eps = 1e-5
    elementwise_affine: Flag = True
    bias: Flag = True
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    attr: ClassVar[str] = "norm"

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        check_declared("num_channels", self.num_channels, shape[0])
        return shape

    def num_params(self, shape: Shape) -> int:
        return shape[0] * (int(self.elementwise_affine) + int(self.elementwise_affine and self.bias))

    def saved_for_backward(self, run: Run) -> Tensor:
        return layer_norm(run, run.input.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # as LayerNorm2dModule

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(LayerNorm2dModule, shape[0], self.eps, self.elementwise_affine, bias=self.bias)
