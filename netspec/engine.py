"""The training step and what it is made of: optimizers, schedulers and one `TrainStep`.

`netspec train` (train.Trainer), `netspec bench` (bench.prepare_step) and the memory measurement
(memory.training_step_peak) all run this one step, so a throughput or memory figure is always of the
step that trains: a change to it (AMP, clipping, a new optimizer) is made here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from netspec.config import Optimizer, TrainConfig, choices
from netspec.device import autocast

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
# The names a spec may give (config.Optimizer) and the classes built for them are one list.
assert tuple(OPTIMIZERS) == choices(Optimizer), "engine.OPTIMIZERS must name config.Optimizer's choices"


def make_optimizer(
    parameters: Iterable[nn.Parameter],
    name: str,
    *,
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """The optimizer `name` over the trainable (not frozen) parameters."""
    params = [p for p in parameters if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


def optimizer_for(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """A run's optimizer, as its train section sets it."""
    return make_optimizer(
        model.parameters(), cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )  # fmt: skip


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Schedulers step once per batch, so they follow the run exactly across resumes."""
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size * steps_per_epoch, cfg.gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    return None


class TrainStep:
    """zero_grad, forward under autocast, loss (in float32), backward through the AMP grad scaler (a no-op
    without fp16), gradient clipping, optimizer step, scheduler step."""

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        device: torch.device,
        *,
        amp: str = "none",
        grad_clip: float | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        self.forward, self.optimizer, self.loss_fn = forward, optimizer, loss_fn
        self.device, self.amp, self.grad_clip, self.scheduler = device, amp, grad_clip, scheduler
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, weight: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on a batch; returns its loss (times `weight`, a rank's share of a distributed batch) and
        the network's output, both still attached to nothing that needs them again."""
        # Gradients are freed before the forward, so they never sit beside the activations it saves.
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            out = self.forward(x)
        loss = self.loss_fn(out.float(), y)
        if weight is not None:
            loss = loss * weight
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self._parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss, out

    def _parameters(self) -> list[Any]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]
