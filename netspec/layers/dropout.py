"""Regularization that is the identity at evaluation: dropout and stochastic depth."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from netspec.layers.base import LayerSpec, ModuleCall, Probability, Shape, call, register
from netspec.layers.saved import Run, Tensor


@register
class Dropout(LayerSpec):
    kind: Literal["dropout"] = "dropout"
    p: Probability = 0.5
    attr: ClassVar[str] = "dropout"
    torch_name: ClassVar[str] = "Dropout"

    def saved_for_backward(self, run: Run) -> Tensor:
        return dropout(run, run.input, self.p)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.Dropout, self.p)


@register
class Dropout2d(LayerSpec):
    kind: Literal["dropout2d"] = "dropout2d"
    p: Probability = 0.5
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    attr: ClassVar[str] = "dropout"
    torch_name: ClassVar[str] = "Dropout2d"

    def saved_for_backward(self, run: Run) -> Tensor:
        return dropout(run, run.input, self.p, feature=True)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.Dropout2d, self.p)


def dropout(run: Run, x: Tensor, p: float, feature: bool = False) -> Tensor:
    """Dropout keeps its mask: one byte per element from CUDA's fused kernel; on CPU (and for whole
    channels) a noise tensor of the input's type, per element (per channel). Identity at p=0 or in eval."""
    if not run.training or p == 0:
        return x
    if p == 1:  # torch multiplies by a zero scalar
        zero = run.new((), x.dtype, requires_grad=False)
        run.save(zero)
        return run.pointwise(x, zero.expand(*x.shape))
    if run.device == "cuda" and not feature:
        run.save(run.new(x.shape, "bool", like=x, requires_grad=False))
        return run.pointwise(x)
    noise = run.new(x.shape[:2] + (1,) * (x.dim - 2) if feature else x.shape, x.dtype, like=x, requires_grad=False)
    run.save(noise)
    return run.pointwise(x, noise)


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
    attr: ClassVar[str] = "drop_path"
    torch_name: ClassVar[str] = "StochasticDepth"

    def saved_for_backward(self, run: Run) -> Tensor:
        """x * noise keeps the noise: one value per example (mode row) or one for the batch."""
        x = run.input
        if not run.training or self.p == 0:
            return x
        noise = run.new((x.shape[0] if self.mode == "row" else 1,) + (1,) * (x.dim - 1), requires_grad=False)
        run.save(noise)
        return run.pointwise(x, noise)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(DropPath, self.p, self.mode)
