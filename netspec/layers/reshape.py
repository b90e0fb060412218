"""Operations that move data between shapes: flatten, reshape, permute, transpose, slice, channel shuffle.

Dimensions count the batch as torch does (0 is the batch, which stays where it is).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from annotated_types import Gt
from pydantic import Field, Strict, model_validator
from torch import nn

from netspec.layers.base import (
    Dim,
    LayerSpec,
    ModuleCall,
    Shape,
    ShapeError,
    Size,
    axis,
    call,
    count,
    format_shape,
    register,
)
from netspec.layers.saved import Run, Tensor


@register
class Flatten(LayerSpec):
    """torch.flatten of dims start_dim..end_dim into one (by default everything but the batch)."""

    kind: Literal["flatten"] = "flatten"
    start_dim: Dim = 1
    end_dim: Dim = -1
    attr: ClassVar[str] = "flatten"
    torch_name: ClassVar[str] = "Flatten"

    def output_shape(self, shape: Shape) -> Shape:
        start = axis(self.start_dim, len(shape), "start_dim")
        end = axis(self.end_dim, len(shape), "end_dim")
        if start > end:
            raise ShapeError(f"start_dim {self.start_dim} comes after end_dim {self.end_dim} for {format_shape(shape)}")
        return (*shape[:start], count(shape[start : end + 1]), *shape[end + 1 :])

    def saved_for_backward(self, run: Run) -> Tensor:
        return run.reshape(run.input, run.batch, *run.out_shape)  # a view, or a copy of a non-contiguous input

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.Flatten, self.start_dim, self.end_dim)


class ReshapeModule(nn.Module):
    """x.reshape(batch, *shape)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


@register
class Reshape(LayerSpec):
    """A new shape for each example (the batch stays first); one size may be -1 (inferred)."""

    kind: Literal["reshape"] = "reshape"
    shape: Annotated[list[Annotated[int, Strict()]], Field(min_length=1)]
    attr: ClassVar[str] = "reshape"

    @model_validator(mode="after")
    def _sizes(self) -> Reshape:
        if sum(d == -1 for d in self.shape) > 1 or any(d == 0 or d < -1 for d in self.shape):
            raise ValueError("shape takes positive sizes and at most one -1")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        known = count(tuple(d for d in self.shape if d != -1))
        total = count(shape)
        if -1 in self.shape:
            if total % known:
                raise ShapeError(f"cannot reshape {format_shape(shape)} ({total} values) to {self.shape}")
            return tuple(total // known if d == -1 else d for d in self.shape)
        if known != total:
            raise ShapeError(
                f"cannot reshape {format_shape(shape)} ({total} values) to {format_shape(tuple(self.shape))} "
                f"({known} values)"
            )
        return tuple(self.shape)

    def saved_for_backward(self, run: Run) -> Tensor:
        return run.reshape(run.input, run.batch, *run.out_shape)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(ReshapeModule, tuple(self.output_shape(shape)))


class PermuteModule(nn.Module):
    """x.permute(*dims) (dims include the batch, as torchvision's Permute)."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = list(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


@register
class Permute(LayerSpec):
    """Reorder dimensions: `dims` lists every dimension with the batch first, as torch's permute
    ([0, 2, 3, 1] makes a C×H×W image channels-last H×W×C)."""

    kind: Literal["permute"] = "permute"
    dims: list[Annotated[int, Strict()]]
    attr: ClassVar[str] = "permute"
    torch_name: ClassVar[str] = "Permute"

    def output_shape(self, shape: Shape) -> Shape:
        full = len(shape) + 1
        normal = [d % full if -full <= d < full else None for d in self.dims]
        if len(self.dims) != full or sorted(normal, key=lambda d: -1 if d is None else d) != list(range(full)):
            raise ShapeError(
                f"dims {self.dims} must list each of the {full} dimensions of a batch of {format_shape(shape)} "
                "once (0 is the batch)"
            )
        if normal[0] != 0:
            raise ShapeError(f"dims {self.dims}: the batch (0) must stay first")
        return tuple(shape[d - 1] for d in normal[1:])  # type: ignore[operator]

    def saved_for_backward(self, run: Run) -> Tensor:
        return run.input.permute(*(d % run.input.dim for d in self.dims))  # a view

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(PermuteModule, list(self.dims))


class TransposeModule(nn.Module):
    def __init__(self, dim0: int, dim1: int) -> None:
        super().__init__()
        self.dim0, self.dim1 = dim0, dim1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(self.dim0, self.dim1)

    def extra_repr(self) -> str:
        return f"dim0={self.dim0}, dim1={self.dim1}"


@register
class Transpose(LayerSpec):
    """Swap two dimensions (torch's transpose; dims count the batch)."""

    kind: Literal["transpose"] = "transpose"
    dim0: Dim
    dim1: Dim
    attr: ClassVar[str] = "transpose"

    def output_shape(self, shape: Shape) -> Shape:
        a, b = axis(self.dim0, len(shape), "dim0"), axis(self.dim1, len(shape), "dim1")
        out = list(shape)
        out[a], out[b] = out[b], out[a]
        return tuple(out)

    def saved_for_backward(self, run: Run) -> Tensor:
        return run.input.transpose(self.dim0 % run.input.dim, self.dim1 % run.input.dim)  # a view

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(TransposeModule, self.dim0, self.dim1)


class SliceModule(nn.Module):
    """x[:, ..., start:end:step] along `dim`, or x.select(dim, index) (which drops the dimension)."""

    def __init__(self, dim: int, start: int = 0, end: int | None = None, step: int = 1, index: int | None = None):
        super().__init__()
        self.dim, self.start, self.end, self.step, self.index = dim, start, end, step, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is not None:
            return x.select(self.dim, self.index)
        return x[(slice(None),) * (self.dim % x.dim()) + (slice(self.start, self.end, self.step),)]

    def extra_repr(self) -> str:
        if self.index is not None:
            return f"dim={self.dim}, index={self.index}"
        return f"dim={self.dim}, start={self.start}, end={self.end}, step={self.step}"


@register
class Slice(LayerSpec):
    """Part of one dimension: `start`/`end`/`step` as Python slices (x[:, 0:58] splits channels as ShuffleNet's
    chunk), or `index` to take one position and drop the dimension (ViT's class token x[:, 0])."""

    kind: Literal["slice"] = "slice"
    dim: Dim = 1
    start: Annotated[int, Strict()] = 0
    end: Annotated[int, Strict()] | None = None
    step: Annotated[int, Strict(), Gt(0)] = 1
    index: Annotated[int, Strict()] | None = None
    attr: ClassVar[str] = "slice"

    @model_validator(mode="after")
    def _index_or_range(self) -> Slice:
        if self.index is not None and (self.start != 0 or self.end is not None or self.step != 1):
            raise ValueError("give index, or start/end/step, not both")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        a = axis(self.dim, len(shape))
        size = shape[a]
        if self.index is not None:
            if not -size <= self.index < size:
                raise ShapeError(f"index {self.index} is out of range for dim {self.dim} of size {size}")
            return shape[:a] + shape[a + 1 :]
        length = len(range(*slice(self.start, self.end, self.step).indices(size)))
        return (*shape[:a], length, *shape[a + 1 :])

    def saved_for_backward(self, run: Run) -> Tensor:
        x, dim = run.input, self.dim % run.input.dim  # a view either way
        return x.select(dim) if self.index is not None else x.narrow(dim, run.out_shape[dim - 1], self.step)

    def module_call(self, shape: Shape) -> ModuleCall:
        if self.index is not None:
            return call(SliceModule, self.dim, index=self.index)
        return call(SliceModule, self.dim, self.start, self.end, self.step)


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
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    attr: ClassVar[str] = "shuffle"
    torch_name: ClassVar[str] = "ChannelShuffle"

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        if shape[0] % self.groups:
            raise ShapeError(f"{shape[0]} channels are not divisible by groups {self.groups}")
        return shape

    def saved_for_backward(self, run: Run) -> Tensor:
        n, (c, h, w) = run.batch, run.shape
        return run.reshape(run.input.view(n, self.groups, c // self.groups, h, w).transpose(1, 2), n, c, h, w)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(ChannelShuffleModule, self.groups)
