"""What a run measures: each epoch's figures (the rows of metrics.json and metrics.csv, written by RunDir), the
result of a run, and the evaluation of a split (loss, accuracy, confusion matrix)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from netspec.data import DeviceLoader
from netspec.device import autocast
from netspec.distributed import Dist


@dataclass
class EpochMetrics:
    """One epoch's figures. val_* are None without a validation split, test_* without a test split."""

    epoch: int
    train_loss: float
    train_accuracy: float
    examples_per_sec: float
    lr: float
    seconds: float
    examples: int = 0  # training examples seen in the epoch (over all processes)
    val_loss: float | None = None
    val_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None


# The columns of metrics.csv, in the order people read them.
METRIC_COLUMNS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "lr",
    "seconds", "examples_per_sec", "examples",
)  # fmt: skip


@dataclass
class TrainResult:
    epochs: list[EpochMetrics]
    device: str
    run_dir: str
    confusion: list[list[int]] = field(default_factory=list)  # of the test split (validation without one)
    classes: list[str] = field(default_factory=list)
    best_epoch: int | None = None  # the epoch best.pt holds, chosen on validation (on test with val_split 0)
    selected_on: str = "val_accuracy"
    stopped_early: bool = False

    @property
    def last(self) -> EpochMetrics:
        return self.epochs[-1]

    @property
    def best(self) -> EpochMetrics:
        return next((m for m in self.epochs if m.epoch == self.best_epoch), self.last)

    def to_dict(self) -> dict[str, Any]:
        keys = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                "examples_per_sec", "examples")  # fmt: skip
        return {
            "epochs": [{k: getattr(m, k) for k in keys} for m in self.epochs],
            "val_accuracy": self.last.val_accuracy,
            "test_accuracy": self.last.test_accuracy,
            "train_loss": self.last.train_loss,
            "train_accuracy": self.last.train_accuracy,
            "examples_per_sec": self.last.examples_per_sec,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best.val_accuracy,
            "best_test_accuracy": self.best.test_accuracy,
            "selected_on": self.selected_on,
            "stopped_early": self.stopped_early,
            "classes": self.classes,
            "device": self.device,
            "run_dir": self.run_dir,
        }


@dataclass
class Evaluation:
    loss: float  # mean cross-entropy
    accuracy: float
    confusion: torch.Tensor  # rows: true class, columns: predicted


@torch.inference_mode()
def evaluate(
    model: nn.Module, loader: DeviceLoader, num_classes: int, amp: str = "none", dist: Dist | None = None
) -> Evaluation:
    """Loss, accuracy and confusion matrix of a split; in a distributed run each rank evaluates its share and
    the sums are reduced."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=loader.device)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=loader.device)
    for x, y in loader:
        with autocast(loader.device, amp):
            logits = model(x).float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").double()
        confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
    model.train(was_training)
    loss_sum = loss_sum.cpu()
    if dist is not None:
        dist.sum_(confusion)
        dist.sum_(loss_sum)
    confusion = confusion.view(num_classes, num_classes).cpu()
    n = max(int(confusion.sum()), 1)
    return Evaluation(loss_sum.item() / n, confusion.trace().item() / n, confusion)
