"""What a run measures: each epoch's figures (the rows of metrics.json and metrics.csv, written by RunDir), the
result of a run, and the evaluation of a split (its loss and the task's metrics; netspec.tasks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from netspec.config import TrainConfig
from netspec.data import DeviceLoader
from netspec.device import autocast
from netspec.distributed import Dist
from netspec.tasks import DEFAULT_TASK, TASKS, Evaluation, Meter, Task, task_named

__all__ = ["METRIC_COLUMNS", "EpochMetrics", "Evaluation", "TrainResult", "evaluate", "metric_columns"]


@dataclass
class EpochMetrics:
    """One epoch's figures. val_* are None without a validation split, test_* without a test split.
    A classifier's accuracy has fields of its own (as netspec 0.1 had them); the metrics of other tasks are in
    `task_metrics` (an attribute, not a field: `asdict` gives a classifier's epoch as it always did), by column
    name (val_r2, test_f1, ...), and flattened into the row and the checkpoint (`state`)."""

    epoch: int
    train_loss: float
    train_accuracy: float | None
    examples_per_sec: float
    lr: float
    seconds: float
    examples: int = 0  # training examples seen in the epoch (over all processes)
    val_loss: float | None = None
    val_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None

    def __post_init__(self) -> None:
        self.task_metrics: dict[str, float | None] = {}

    def state(self) -> dict[str, Any]:
        """The epoch as a checkpoint keeps it: the fields and the task's metrics, in one flat dict."""
        return {**asdict(self), **self.task_metrics}

    def get(self, column: str) -> float | None:
        """The value of a column (a field, or a task's metric), None when it was not measured."""
        if column in _FIELDS:
            return getattr(self, column)
        return self.task_metrics.get(column)

    def set(self, column: str, value: float | None) -> None:
        if column in _FIELDS:
            setattr(self, column, value)
        else:
            self.task_metrics[column] = value

    def row(self, columns: tuple[str, ...]) -> dict[str, Any]:
        """metrics.json's row: the fields that are columns (in their order), then the task's metrics."""
        known = [f for f in _FIELDS if f in columns]
        return {name: self.get(name) for name in [*known, *(c for c in columns if c not in known)]}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EpochMetrics:
        """An epoch from its metrics.json row (the columns that are no field are the task's metrics)."""
        known = {k: v for k, v in row.items() if k in _FIELDS}
        known.setdefault("train_accuracy", None)
        epoch = cls(**known)
        epoch.task_metrics.update({k: v for k, v in row.items() if k not in _FIELDS})
        return epoch


_FIELDS = tuple(f.name for f in fields(EpochMetrics))


def metric_columns(task: Task) -> tuple[str, ...]:
    """The columns of metrics.csv for a task, in the order people read them."""
    return task.columns()


# A classifier's columns (netspec 0.1's, unchanged).
METRIC_COLUMNS = metric_columns(TASKS[DEFAULT_TASK])


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
    task: str = DEFAULT_TASK
    details: dict[str, Any] = field(default_factory=dict)  # the report split's per-output figures (tasks)

    @property
    def last(self) -> EpochMetrics:
        return self.epochs[-1]

    @property
    def best(self) -> EpochMetrics:
        return next((m for m in self.epochs if m.epoch == self.best_epoch), self.last)

    def to_dict(self) -> dict[str, Any]:
        task = task_named(self.task)
        names = task.metric_names
        keys = tuple(
            c for c in task.columns() if c not in ("lr", "seconds")
        )  # epoch, train/val/test loss and metrics, examples_per_sec, examples
        last, best = self.last, self.best
        result: dict[str, Any] = {
            "epochs": [{k: m.get(k) for k in keys} for m in self.epochs],
            **{f"{split}_{name}": last.get(f"{split}_{name}") for name in names for split in ("val", "test")},
            "train_loss": last.train_loss,
            **{f"train_{name}": last.get(f"train_{name}") for name in names},
            "examples_per_sec": last.examples_per_sec,
            "best_epoch": self.best_epoch,
            **{f"best_{split}_{name}": best.get(f"{split}_{name}") for name in names for split in ("val", "test")},
            "selected_on": self.selected_on,
            "stopped_early": self.stopped_early,
            "classes": self.classes,
            "device": self.device,
            "run_dir": self.run_dir,
            "task": self.task,
        }
        if self.details and self.task != DEFAULT_TASK:
            result["details"] = self.details
        return result


@torch.inference_mode()
def evaluate(
    model: nn.Module, loader: DeviceLoader, meter: Meter | int, amp: str = "none", dist: Dist | None = None
) -> Evaluation:
    """A split's loss and the task's metrics (`meter`: Task.meter; a number of classes: a classifier's, as
    netspec 0.1 took it); in a distributed run each rank evaluates its share and the sums are reduced."""
    if isinstance(meter, int):
        classes = TASKS[DEFAULT_TASK]
        loss = classes.loss_fn(TrainConfig(), "sum", train=False)
        meter = Meter(classes, [str(i) for i in range(meter)], loss, loader.device)
    was_training = model.training
    model.eval()
    for x, y in loader:
        with autocast(loader.device, amp):
            out = model(x).float()
        meter.update(out, y)
    model.train(was_training)
    return meter.result(dist)
