"""What a network learns: one `Task` per kind of problem, in one registry (`TASKS`), so that no other module
branches on the task's name.

A Task owns everything that varies with the problem:

- `read_targets(path, columns, cells, lines, explicit)`: a table's label cells -> (output names, targets tensor):
  int64 (N) class indices; float32 (N, T) numbers (regression); float32 (N, L) 0/1 (multilabel). Bad cells raise
  BadDataError naming the file, line and column. `check_targets(names, where)` refuses what cannot be trained.
- `strata(targets)`: what the seeded splits keep in proportion (classes), or None for a plain random split.
- `target_stats(train_targets)` / `encode(targets, stats)`: regression standardizes its targets on the training
  split (mean, std recorded in DataInfo and the checkpoint); `decode(outputs, info)` returns model outputs in the
  targets' units (regression), probabilities (softmax / sigmoid) otherwise.
- `check_output(out_shape, info, where, fix)`: the network's output must fit the data (UsageError with the fix,
  raised before any file is written).
- `loss_fn(cfg, reduction, train)`: the loss of a batch ("mean" over examples, or "sum" for a distributed rank
  and for evaluation; `train=False` drops training-only terms such as label smoothing).
- metrics: `stat_size` / `batch_stats(out, y, meter)` give a float64 vector of sums per batch (added up over
  batches and ranks), `summarize(stats, n, meter)` the named metrics (`metric_names`, e.g. accuracy; mae, rmse, r2;
  f1, exact_match, label_accuracy) and `details(...)` the per-output figures (confusion, per target, per label).
  `Meter` runs them over a split. `full=False` is the cheap running form used on training batches.
- selection: `lower_is_better(metric)`, `selection_metric(cfg)` (best.pt) and `check_settings(cfg)` (loss and
  monitor are the task's own).
- output: `shown` (the metrics an epoch line shows), `outputs_word` (classes / targets / labels), `draw(...)` (the
  picture of the report split: confusion matrix, predicted-vs-true scatter, per-label F1) and `predictions(...)`
  (what `netspec predict` returns per input).

A new task subclasses Task, overrides what differs, and is added to TASKS (and to config.TaskName; its metrics'
monitor names to config.Monitor).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from netspec import runfolder
from netspec.config import Monitor, TaskName, TrainConfig, choices
from netspec.errors import BadDataError, UsageError

if TYPE_CHECKING:
    from netspec.data.base import DataInfo, Pool

# A numeric label column with more distinct whole numbers than this is taken for a measurement, not for classes.
MAX_NUMERIC_CLASSES = 50
# Rows of the report split kept for a picture (a scatter of predicted vs true).
PICTURE_ROWS = 5000

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Evaluation:
    """A split's loss and the task's metrics (`metrics`: name -> value, e.g. accuracy or r2), its per-output
    figures (`details`: a confusion matrix, per-target or per-label metrics; JSON-ready) and rows kept for the
    picture (`samples`: outputs and targets, on the CPU)."""

    loss: float
    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    samples: tuple[torch.Tensor, torch.Tensor] | None = None
    examples: int = 0

    @property
    def accuracy(self) -> float:
        """Classification's accuracy (netspec 0.1's Evaluation.accuracy)."""
        return self.metrics["accuracy"]

    @property
    def confusion(self) -> torch.Tensor:
        """Classification's confusion matrix: rows true class, columns predicted."""
        return torch.tensor(self.details["confusion"], dtype=torch.long)


class Meter:
    """Sums of one split's batches (loss, the task's statistics, examples), summed over the ranks of a distributed
    run, then its Evaluation."""

    def __init__(
        self,
        task: Task,
        names: Sequence[str],
        loss_fn: LossFn,
        device: torch.device,
        *,
        target_mean: Sequence[float] = (),
        target_std: Sequence[float] = (),
        threshold: float = 0.5,
        full: bool = True,
    ) -> None:
        self.task, self.names, self.loss_fn, self.full = task, tuple(names), loss_fn, full
        self.target_mean, self.target_std, self.threshold = tuple(target_mean), tuple(target_std), threshold
        self.sums = torch.zeros(task.stat_size(self), dtype=torch.float64, device=device)
        self.loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
        self.count = 0
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.kept_rows = 0

    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        out = out.float()
        self.loss_sum += self.loss_fn(out, y).double()
        self.sums += self.task.batch_stats(out, y, self)
        self.count += len(y)
        rows = self.task.sample_rows
        if self.full and self.task.keeps_samples and self.kept_rows < rows:
            self.kept.append((out[: rows - self.kept_rows].cpu(), y[: rows - self.kept_rows].cpu()))
            self.kept_rows += len(self.kept[-1][1])

    def result(self, dist: Any = None) -> Evaluation:
        sums, loss_sum = self.sums.cpu(), self.loss_sum.cpu()
        count = torch.tensor([self.count], dtype=torch.long)
        if dist is not None:
            dist.sum_(sums)
            dist.sum_(loss_sum)
            dist.sum_(count)
        n = max(int(count.item()), 1)
        samples = None
        if self.kept:
            kept = (torch.cat([o for o, _ in self.kept]), torch.cat([t for _, t in self.kept]))
            samples = (self.task.in_units(kept[0], self), self.task.in_units(kept[1], self))
        return Evaluation(
            loss_sum.item() / n,
            self.task.summarize(sums, n, self),
            self.task.details(sums, n, self) if self.full else {},
            samples,
            int(count.item()),
        )


class Task:
    name: str = ""
    metric_names: tuple[str, ...] = ()  # the task's metrics, as they appear in columns (val_<name>)
    lower_better: frozenset[str] = frozenset()  # of metric_names (loss is always lower-better)
    shown: tuple[tuple[str, str], ...] = ()  # (metric, short label) in an epoch's line
    losses: tuple[str, ...] = ()  # config.Loss values of this task, the default first
    output_word: str = "output"  # what one of the network's outputs is (a class, a target, a label)
    outputs_word: str = "outputs"
    keeps_samples = False  # whether the picture needs rows of the split (a scatter)
    table_only = True  # whether its targets come only from a table's columns (not from image folders)
    sample_rows = PICTURE_ROWS  # rows of the report split its picture needs (with keeps_samples)
    resize_policy: str | None = None  # how predict sizes images, when the task fixes it (else --resize-policy)
    writes_files = False  # whether predict --out writes a file per input (segmentation's masks)

    # -- data --

    def read_targets(
        self, path: Path, columns: list[str], cells: list[list[str]], lines: list[int], explicit: bool
    ) -> tuple[tuple[str, ...], torch.Tensor]:
        raise NotImplementedError

    def check_targets(self, names: tuple[str, ...], where: str) -> None:
        """Raise BadDataError when the targets cannot be trained on (classification: fewer than 2 classes)."""

    def strata(self, targets: torch.Tensor) -> torch.Tensor | None:
        """What a split keeps in proportion; None: a seeded random split."""
        return None

    def target_stats(self, targets: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (), ()

    def encode(self, targets: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        return targets

    def read_folder(self, cfg: TrainConfig, input_shape: tuple[int, ...]) -> Pool:
        """The examples of the image folder cfg.data with this task's targets: class folders (folders.py)."""
        from netspec.data.folders import read_folder
        from netspec.data.segmentation import is_segmentation_folder

        if is_segmentation_folder(cfg.data):  # type: ignore[arg-type]
            raise UsageError(
                f"{cfg.data}: holds images/ and masks/ folders, a segmentation folder, but the task is {self.name}: "
                "pass --task segmentation (or task: segmentation in the spec's train section)"
            )
        return read_folder(cfg.data, input_shape, cfg.skip_bad_files)  # type: ignore[arg-type]

    # -- model --

    def check_output(self, out: tuple[int, ...], info: DataInfo, where: str, fix: Callable[[int], str]) -> None:
        """The network outputs one value per output name (a class score, a target, a label's logit)."""
        n = len(info.classes)
        if len(out) != 1:
            raise UsageError(
                f"{where}: the network outputs {_shape(out)} per example, but {self.name} takes one value per "
                f"{self.output_word} ({n} for {info.name}); end the network with a flatten (or pooling) and a "
                f"linear layer of out_features {n}"
            )
        if out[0] != n:
            raise UsageError(
                f"{where}: the network outputs {out[0]} values but {info.name} has {self.count(n)} ({fix(n)})"
            )

    def count(self, n: int) -> str:
        return f"{n} {self.outputs_word if n != 1 else self.output_word}"

    def check_settings(self, cfg: TrainConfig) -> None:
        """The loss and monitor are this task's own (UsageError naming the option and the choices)."""
        if cfg.loss is not None and cfg.loss not in self.losses:
            raise UsageError(f"--loss {cfg.loss}: not a loss of {self.name}; choose from {', '.join(self.losses)}")
        allowed = self.monitors()
        if cfg.monitor not in allowed:
            raise UsageError(f"--monitor {cfg.monitor}: not a metric of {self.name}; choose from {', '.join(allowed)}")

    def monitors(self) -> tuple[str, ...]:
        return ("val_loss", *(f"val_{m}" for m in self.metric_names))

    def loss_fn(self, cfg: TrainConfig, reduction: str = "mean", train: bool = True) -> LossFn:
        raise NotImplementedError

    # -- metrics --

    def stat_size(self, meter: Meter) -> int:
        raise NotImplementedError

    def batch_stats(self, out: torch.Tensor, y: torch.Tensor, meter: Meter) -> torch.Tensor:
        raise NotImplementedError

    def summarize(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, float]:
        raise NotImplementedError

    def details(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, Any]:
        return {}

    def meter(self, info: DataInfo, cfg: TrainConfig, device: torch.device, full: bool = True) -> Meter:
        return Meter(
            self, info.classes, self.loss_fn(cfg, "sum", train=False), device, target_mean=info.target_mean,
            target_std=info.target_std, threshold=cfg.threshold, full=full,
        )  # fmt: skip

    def lower_is_better(self, metric: str) -> bool:
        return metric == "loss" or metric in self.lower_better

    def selection_metric(self, cfg: TrainConfig) -> str:
        """The metric best.pt is chosen on: the monitor's."""
        return cfg.monitor.removeprefix("val_")

    def columns(self) -> tuple[str, ...]:
        """metrics.csv's columns, in the order people read them."""
        per_split = [f"{split}_{m}" for split in ("train", "val", "test") for m in ("loss", *self.metric_names)]
        return ("epoch", *per_split, "lr", "seconds", "examples_per_sec", "examples")

    # -- output --

    def draw(self, path: Path, evaluation: Evaluation | None, names: list[str], title: str) -> None:
        raise NotImplementedError

    def picture_name(self) -> str:
        return runfolder.CONFUSION

    def predictions(self, outputs: torch.Tensor, info: DataInfo, cfg: TrainConfig, top_k: int) -> list[dict[str, Any]]:
        """What predict says of each row of outputs (JSON-ready dicts)."""
        raise NotImplementedError

    def decode(self, outputs: torch.Tensor, info: DataInfo) -> torch.Tensor:
        """Outputs in the targets' units (regression) or as probabilities."""
        return outputs

    def table(self, evaluation: Evaluation, names: list[str]) -> tuple[str, list[str], list[list[str]]]:
        """`netspec eval`'s table of the per-output figures: (title, header, rows)."""
        per = next(iter(evaluation.details.values()), {})  # {output name: {figure: value}}
        figures = list(next(iter(per.values()), {}))
        rows = [[name, *(_figure(per[name][f]) for f in figures)] for name in names if name in per]
        return f"per {self.output_word}", [self.output_word, *figures], rows

    def export_note(self) -> str:
        """What an exported Python file's docstring says of the outputs (after what it says of the inputs)."""
        return ""

    def prediction_header(self, top_k: int) -> list[str]:
        """The columns `netspec predict` prints after the input's."""
        raise NotImplementedError

    def write_predictions(
        self, folder: Path, names: list[str], outputs: torch.Tensor, sizes: list[tuple[int, int]], info: DataInfo
    ) -> list[Path]:
        """`netspec predict --out FOLDER`: a file per input (of a task that `writes_files`), at its size."""
        raise NotImplementedError

    def prediction_cells(self, output: dict[str, Any], top_k: int) -> list[str]:
        raise NotImplementedError

    def in_units(self, values: torch.Tensor, meter: Meter) -> torch.Tensor:
        """Targets (or outputs) as the meter saw them, back in the data's units (regression's are standardized)."""
        return values


# --- classification ----------------------------------------------------------------------------


class Classification(Task):
    name = "classification"
    metric_names = ("accuracy",)
    shown = (("accuracy", "acc"),)
    losses = ("cross_entropy",)
    output_word, outputs_word = "class", "classes"
    table_only = False

    def read_targets(
        self, path: Path, columns: list[str], cells: list[list[str]], lines: list[int], explicit: bool
    ) -> tuple[tuple[str, ...], torch.Tensor]:
        if len(columns) != 1:
            raise BadDataError(
                f"{path}:1: classification takes one label column, not {len(columns)} ({', '.join(columns)}); for "
                "several targets pass --task regression, for several yes/no labels --task multilabel"
            )
        values = [row[0] for row in cells]
        for line, value in zip(lines, values, strict=True):
            if not value:
                raise BadDataError(
                    f"{path}:{line}: column {columns[0]!r} (the label): the cell is empty (row {line - 1})"
                )
        numbers = [_label_number(v) for v in values]
        if not explicit and all(n is not None for n in numbers):
            distinct = set(numbers)
            whole = all(n == int(n) for n in distinct)  # type: ignore[arg-type]
            if not whole or len(distinct) > MAX_NUMERIC_CLASSES:
                what = (
                    f"{len(distinct)} distinct numbers" if whole else f"{len(distinct)} distinct numbers, not all whole"
                )
                raise BadDataError(
                    f"{path.name}: the label column {columns[0]!r} holds {what}; for a numeric target pass --task "
                    "regression, for classes pass --task classification"
                )
        return _classes(values, numbers)

    def check_targets(self, names: tuple[str, ...], where: str) -> None:
        if len(names) < 2:
            only = f" (only {names[0]!r})" if names else ""
            raise BadDataError(
                f"{where}: one class{only}; a classifier needs at least 2 classes: add the images (or rows) of "
                "the other classes"
            )

    def strata(self, targets: torch.Tensor) -> torch.Tensor | None:
        return targets

    def check_output(self, out: tuple[int, ...], info: DataInfo, where: str, fix: Callable[[int], str]) -> None:
        classes = len(info.classes)
        if len(out) != 1:
            raise UsageError(
                f"{where}: the network outputs {_shape(out)} per example, but netspec train trains classifiers, "
                f"whose output is one score per class ({classes} for {info.name}); end the network with a flatten "
                f"(or pooling) and a linear layer of out_features {classes}"
            )
        super().check_output(out, info, where, fix)

    def selection_metric(self, cfg: TrainConfig) -> str:
        # best.pt of a classifier is chosen on accuracy (as always); the monitor drives patience only.
        return "accuracy"

    def loss_fn(self, cfg: TrainConfig, reduction: str = "mean", train: bool = True) -> LossFn:
        return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing if train else 0.0, reduction=reduction)

    def stat_size(self, meter: Meter) -> int:
        # Evaluation: the confusion matrix; a training batch: the count of correct answers.
        return len(meter.names) ** 2 if meter.full else 1

    def batch_stats(self, out: torch.Tensor, y: torch.Tensor, meter: Meter) -> torch.Tensor:
        predicted = out.argmax(1)
        if not meter.full:
            return (predicted == y).sum().double().view(1)
        n = len(meter.names)
        return torch.bincount(y * n + predicted, minlength=n * n).double()

    def summarize(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, float]:
        if not meter.full:
            return {"accuracy": stats[0].item() / n}
        k = len(meter.names)
        return {"accuracy": stats.view(k, k).trace().item() / n}

    def details(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, Any]:
        k = len(meter.names)
        return {"confusion": stats.view(k, k).round().long().tolist()}

    def draw(self, path: Path, evaluation: Evaluation | None, names: list[str], title: str) -> None:
        from netspec.plots import plot_confusion

        k = len(names)
        confusion = evaluation.confusion if evaluation is not None else torch.zeros(k, k, dtype=torch.long)
        plot_confusion(path, confusion, names, title)

    def decode(self, outputs: torch.Tensor, info: DataInfo) -> torch.Tensor:
        return outputs.float().softmax(1)

    def table(self, evaluation: Evaluation, names: list[str]) -> tuple[str, list[str], list[list[str]]]:
        rows = [[name, *map(str, row)] for name, row in zip(names, evaluation.details["confusion"], strict=True)]
        return "confusion matrix (rows: true class, columns: predicted)", ["", *(n[:10] for n in names)], rows

    def prediction_header(self, top_k: int) -> list[str]:
        return ["class", "prob.", *(["then"] if top_k > 1 else [])]

    def prediction_cells(self, output: dict[str, Any], top_k: int) -> list[str]:
        then = ", ".join(f"{t['class']} {t['probability']:.2f}" for t in output["top"][1:])
        return [output["class"], f"{output['probability']:.3f}", *([then] if top_k > 1 else [])]

    def predictions(self, outputs: torch.Tensor, info: DataInfo, cfg: TrainConfig, top_k: int) -> list[dict[str, Any]]:
        probs = self.decode(outputs, info)
        values, indices = probs.topk(min(top_k, len(info.classes)), dim=1)
        rows = []
        for vs, ix in zip(values.tolist(), indices.tolist(), strict=True):
            top = [{"class": info.classes[i], "probability": round(v, 6)} for v, i in zip(vs, ix, strict=True)]
            rows.append({"class": top[0]["class"], "probability": top[0]["probability"], "top": top})
        return rows


# --- regression --------------------------------------------------------------------------------


class Regression(Task):
    name = "regression"
    metric_names = ("mae", "rmse", "r2")
    lower_better = frozenset({"mae", "rmse"})
    shown = (("r2", "R²"), ("mae", "mae"))  # the first is also the curves' metric
    losses = ("mse", "l1", "huber")
    output_word, outputs_word = "target", "targets"
    keeps_samples = True

    def read_targets(
        self, path: Path, columns: list[str], cells: list[list[str]], lines: list[int], explicit: bool
    ) -> tuple[tuple[str, ...], torch.Tensor]:
        values = [
            [_target_number(path, line, column, cell) for column, cell in zip(columns, row, strict=True)]
            for line, row in zip(lines, cells, strict=True)
        ]
        return tuple(columns), torch.tensor(values, dtype=torch.float32).view(len(values), len(columns))

    def target_stats(self, targets: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
        x = targets.double()
        mean = x.mean(0)
        std = x.std(0, correction=0) if len(x) > 1 else torch.ones_like(mean)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return tuple(mean.tolist()), tuple(std.tolist())

    def encode(self, targets: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        return ((targets.double() - torch.tensor(mean)) / torch.tensor(std)).float()

    def decode(self, outputs: torch.Tensor, info: DataInfo) -> torch.Tensor:
        return outputs.double() * torch.tensor(info.target_std) + torch.tensor(info.target_mean)

    def in_units(self, values: torch.Tensor, meter: Meter) -> torch.Tensor:
        if not meter.target_std:
            return values
        return values.double() * torch.tensor(meter.target_std) + torch.tensor(meter.target_mean)

    def loss_fn(self, cfg: TrainConfig, reduction: str = "mean", train: bool = True) -> LossFn:
        # Summed over the targets, then the mean (or the sum) over the examples: a distributed rank's summed
        # loss and evaluation's sum add up to the same per-example loss.
        elementwise = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss}[cfg.loss or self.losses[0]]

        def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            per_example = elementwise(out, y, reduction="none").sum(1)
            return per_example.mean() if reduction == "mean" else per_example.sum()

        return loss

    def stat_size(self, meter: Meter) -> int:
        return 4 * len(meter.names)  # per target: sum |error|, sum error², sum y, sum y² (standardized units)

    def batch_stats(self, out: torch.Tensor, y: torch.Tensor, meter: Meter) -> torch.Tensor:
        error = (out - y).double()
        y = y.double()
        return torch.cat([error.abs().sum(0), (error**2).sum(0), y.sum(0), (y**2).sum(0)])

    def _per_target(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, list[float]]:
        t = len(meter.names)
        abs_sum, sq_sum, y_sum, y2_sum = stats.view(4, t)
        std = torch.tensor(meter.target_std or [1.0] * t, dtype=torch.float64)
        spread = (y2_sum - y_sum**2 / n).clamp(min=1e-12)
        return {
            "mae": (abs_sum / n * std).tolist(),
            "rmse": ((sq_sum / n).sqrt() * std).tolist(),
            "r2": (1 - sq_sum / spread).tolist(),
        }

    def summarize(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, float]:
        return {name: sum(values) / len(values) for name, values in self._per_target(stats, n, meter).items()}

    def details(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, Any]:
        per = self._per_target(stats, n, meter)
        return {
            "targets": {
                name: {metric: per[metric][i] for metric in self.metric_names} for i, name in enumerate(meter.names)
            }
        }

    def picture_name(self) -> str:
        return runfolder.PREDICTED

    def export_note(self) -> str:
        return (
            " Task regression: the outputs are standardized targets (CLASSES names them); in the targets' units "
            "they are output * TARGET_STD + TARGET_MEAN."
        )

    def draw(self, path: Path, evaluation: Evaluation | None, names: list[str], title: str) -> None:
        from netspec.plots import plot_scatter

        if evaluation is None or evaluation.samples is None:
            out = true = torch.zeros(0, len(names))
        else:
            out, true = evaluation.samples
        plot_scatter(path, out, true, names, title)

    def predictions(self, outputs: torch.Tensor, info: DataInfo, cfg: TrainConfig, top_k: int) -> list[dict[str, Any]]:
        values = self.decode(outputs, info)
        return [{"values": {n: round(v, 6) for n, v in zip(info.classes, row, strict=True)}} for row in values.tolist()]

    def prediction_header(self, top_k: int) -> list[str]:
        return ["predicted"]

    def prediction_cells(self, output: dict[str, Any], top_k: int) -> list[str]:
        values = output["values"]
        return [", ".join(f"{name} {_figure(v)}" for name, v in values.items()) if len(values) > 1
                else _figure(next(iter(values.values())))]  # fmt: skip


# --- multi-label -------------------------------------------------------------------------------


class Multilabel(Task):
    name = "multilabel"
    metric_names = ("f1", "exact_match", "label_accuracy")
    shown = (("f1", "f1"),)
    losses = ("bce",)
    output_word, outputs_word = "label", "labels"

    def read_targets(
        self, path: Path, columns: list[str], cells: list[list[str]], lines: list[int], explicit: bool
    ) -> tuple[tuple[str, ...], torch.Tensor]:
        if len(columns) == 1 and not all(_zero_or_one(row[0]) is not None for row in cells):
            # One column of names, e.g. "cat;dog" (an empty cell: no label is on).
            sets = [{name.strip() for name in row[0].split(";") if name.strip()} for row in cells]
            names = tuple(sorted(set().union(*sets)))
            index = {name: i for i, name in enumerate(names)}
            targets = torch.zeros(len(cells), len(names))
            for r, members in enumerate(sets):
                targets[r, [index[m] for m in members]] = 1.0
            return names, targets
        values = []
        for line, row in zip(lines, cells, strict=True):
            values.append([])
            for column, cell in zip(columns, row, strict=True):
                bit = _zero_or_one(cell)
                if bit is None:
                    shown = cell if len(cell) <= 30 else cell[:27] + "..."
                    raise BadDataError(
                        f"{path}:{line}: column {column!r}: {shown!r} is not 0 or 1 (a multi-label column says "
                        "whether its label is on: 0 or 1)"
                    )
                values[-1].append(bit)
        return tuple(columns), torch.tensor(values, dtype=torch.float32).view(len(values), len(columns))

    def loss_fn(self, cfg: TrainConfig, reduction: str = "mean", train: bool = True) -> LossFn:
        def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            per_example = F.binary_cross_entropy_with_logits(out, y, reduction="none").sum(1)
            return per_example.mean() if reduction == "mean" else per_example.sum()

        return loss

    def stat_size(self, meter: Meter) -> int:
        return 4 * len(meter.names) + 1  # per label: true and false positives, false and true negatives; exact

    def batch_stats(self, out: torch.Tensor, y: torch.Tensor, meter: Meter) -> torch.Tensor:
        on = out.sigmoid() >= meter.threshold
        truth = y > 0.5
        counts = [(on & truth), (on & ~truth), (~on & truth), (~on & ~truth)]
        exact = (on == truth).all(1).sum().view(1)
        return torch.cat([*(c.sum(0) for c in counts), exact]).double()

    def _per_label(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, list[float]]:
        k = len(meter.names)
        tp, fp, fn, tn = stats[: 4 * k].view(4, k)
        denominator = 2 * tp + fp + fn
        f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.ones_like(tp))
        return {"f1": f1.tolist(), "accuracy": ((tp + tn) / n).tolist(), "positives": (tp + fn).tolist()}

    def summarize(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, float]:
        per = self._per_label(stats, n, meter)
        return {
            "f1": sum(per["f1"]) / len(per["f1"]),
            "exact_match": stats[-1].item() / n,
            "label_accuracy": sum(per["accuracy"]) / len(per["accuracy"]),
        }

    def details(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, Any]:
        per = self._per_label(stats, n, meter)
        return {
            "labels": {
                name: {"f1": per["f1"][i], "accuracy": per["accuracy"][i], "positives": int(per["positives"][i])}
                for i, name in enumerate(meter.names)
            }
        }

    def picture_name(self) -> str:
        return runfolder.LABELS

    def export_note(self) -> str:
        return (
            " Task multilabel: one logit per label (CLASSES names them); a label is on when sigmoid(output) is at "
            "least the run's threshold (0.5 unless it set one)."
        )

    def draw(self, path: Path, evaluation: Evaluation | None, names: list[str], title: str) -> None:
        from netspec.plots import plot_label_bars

        labels = (evaluation.details.get("labels") if evaluation is not None else None) or {}
        plot_label_bars(
            path, names, [labels.get(n, {}).get("f1", 0.0) for n in names],
            [labels.get(n, {}).get("accuracy", 0.0) for n in names], title,
        )  # fmt: skip

    def decode(self, outputs: torch.Tensor, info: DataInfo) -> torch.Tensor:
        return outputs.float().sigmoid()

    def predictions(self, outputs: torch.Tensor, info: DataInfo, cfg: TrainConfig, top_k: int) -> list[dict[str, Any]]:
        probs = self.decode(outputs, info)
        rows = []
        for row in probs.tolist():
            order = sorted(range(len(row)), key=lambda i: -row[i])
            rows.append({
                "labels": [info.classes[i] for i in order if row[i] >= cfg.threshold],
                "probabilities": {info.classes[i]: round(row[i], 6) for i in order},
            })  # fmt: skip
        return rows

    def prediction_header(self, top_k: int) -> list[str]:
        return ["labels on", "probabilities"]

    def prediction_cells(self, output: dict[str, Any], top_k: int) -> list[str]:
        probabilities = ", ".join(f"{n} {p:.2f}" for n, p in output["probabilities"].items())
        return [", ".join(output["labels"]) or "(none)", probabilities]


# --- segmentation ------------------------------------------------------------------------------


class Segmentation(Task):
    """A class per pixel: the network outputs [classes, H, W] (H×W the input's), the targets are masks (N, H, W)
    of class indices (netspec.data.segmentation; IGNORED pixels count nowhere). The statistics are the pixels'
    confusion matrix, so pixel accuracy and each class's IoU add up exactly over batches and ranks."""

    name = "segmentation"
    metric_names = ("pixel_accuracy", "mean_iou")
    shown = (("mean_iou", "mIoU"), ("pixel_accuracy", "pixel acc"))
    losses = ("cross_entropy",)
    output_word, outputs_word = "class", "classes"
    keeps_samples = True
    sample_rows = 6  # masks drawn side by side in the picture
    table_only = False
    resize_policy = "stretch"  # as the folder was read: every pixel of an input gets a class
    writes_files = True

    def read_folder(self, cfg: TrainConfig, input_shape: tuple[int, ...]) -> Pool:
        from netspec.data.segmentation import read_segmentation_folder

        return read_segmentation_folder(cfg.data, input_shape, cfg.skip_bad_files, cfg.ignore_index)  # type: ignore[arg-type]

    def check_settings(self, cfg: TrainConfig) -> None:
        super().check_settings(cfg)
        from netspec.data import is_table

        if cfg.data is None or is_table(cfg.data):
            raise UsageError(
                f"--task segmentation reads a folder of images/ and masks/ (the same file names; a mask holds each "
                f"pixel's class), not {'a table' if cfg.data else 'a built-in dataset'}: give --data FOLDER"
            )

    def check_targets(self, names: tuple[str, ...], where: str) -> None:
        if len(names) < 2:
            raise BadDataError(
                f"{where}: its masks hold one class only ({names[0] if names else 'none'}); segmentation needs at "
                "least 2 (e.g. background and object)"
            )

    def check_output(self, out: tuple[int, ...], info: DataInfo, where: str, fix: Callable[[int], str]) -> None:
        k, size = len(info.classes), tuple(info.sample_shape[1:])
        if len(out) != 3 or out[0] != k or tuple(out[1:]) != size:
            wanted = f"[{k}, {size[0]}, {size[1]}] (a score per class for each pixel of the input)"
            raise UsageError(
                f"{where}: the network outputs {_shape(out)} but the masks have {k} classes at "
                f"{size[0]}×{size[1]}; its output must be {wanted}: end it with a conv2d of out_channels {k} at "
                "the input's size"
            )

    def loss_fn(self, cfg: TrainConfig, reduction: str = "mean", train: bool = True) -> LossFn:
        # Each image's mean over its counted pixels, then the mean (or the sum) over the images: a distributed
        # rank's summed loss and evaluation's sum add up to the same per-image loss.
        from netspec.data.segmentation import IGNORED

        smoothing = cfg.label_smoothing if train else 0.0

        def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            per_pixel = F.cross_entropy(out, y, ignore_index=IGNORED, label_smoothing=smoothing, reduction="none")
            counted = (y != IGNORED).flatten(1).sum(1).clamp(min=1)
            per_image = per_pixel.flatten(1).sum(1) / counted
            return per_image.mean() if reduction == "mean" else per_image.sum()

        return loss

    def stat_size(self, meter: Meter) -> int:
        return len(meter.names) ** 2  # the pixels' confusion matrix

    def batch_stats(self, out: torch.Tensor, y: torch.Tensor, meter: Meter) -> torch.Tensor:
        k = len(meter.names)
        counted = y >= 0
        return torch.bincount(y[counted] * k + out.argmax(1)[counted], minlength=k * k).double()

    def _iou(self, stats: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(IoU of each class, whether the class is in the truth or the prediction)."""
        confusion = stats.view(k, k)
        hits = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - hits
        return hits / union.clamp(min=1), union > 0

    def summarize(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, float]:
        k = len(meter.names)
        iou, present = self._iou(stats, k)
        pixels = stats.sum().item()
        return {
            "pixel_accuracy": stats.view(k, k).trace().item() / max(pixels, 1),
            "mean_iou": iou[present].mean().item() if bool(present.any()) else 0.0,
        }

    def details(self, stats: torch.Tensor, n: int, meter: Meter) -> dict[str, Any]:
        k = len(meter.names)
        iou, present = self._iou(stats, k)
        confusion = stats.view(k, k)
        return {
            "classes": {
                name: {"iou": iou[i].item() if present[i] else None, "pixels": int(confusion[i].sum().item())}
                for i, name in enumerate(meter.names)
            },
            "confusion": confusion.round().long().tolist(),
        }

    def picture_name(self) -> str:
        return runfolder.MASKS

    def draw(self, path: Path, evaluation: Evaluation | None, names: list[str], title: str) -> None:
        from netspec.plots import plot_masks

        if evaluation is None or evaluation.samples is None:
            out, true = torch.zeros(0, len(names), 1, 1), torch.zeros(0, 1, 1, dtype=torch.long)
        else:
            out, true = evaluation.samples
        iou = {n: c["iou"] for n, c in (evaluation.details.get("classes", {}) if evaluation else {}).items()}
        plot_masks(path, true, out.argmax(1), names, iou, title)

    def table(self, evaluation: Evaluation, names: list[str]) -> tuple[str, list[str], list[list[str]]]:
        classes = evaluation.details.get("classes", {})
        rows = []
        for name in names:
            iou, pixels = classes[name]["iou"], classes[name]["pixels"]
            rows.append([name, "-" if iou is None else f"{iou:.4f}", f"{pixels:,}"])
        return "IoU per class", ["class", "IoU", "pixels"], rows  # (-: in neither the masks nor the prediction)

    def export_note(self) -> str:
        return (
            " Task segmentation: the output is [classes, H, W], a score per class (CLASSES names them) for each "
            "pixel; its argmax over dim 1 is the class map."
        )

    def decode(self, outputs: torch.Tensor, info: DataInfo) -> torch.Tensor:
        return outputs.float().softmax(1)

    def predictions(self, outputs: torch.Tensor, info: DataInfo, cfg: TrainConfig, top_k: int) -> list[dict[str, Any]]:
        """Each input's share of pixels of each class (its coverage), most covered first."""
        predicted = outputs.argmax(1)
        k = len(info.classes)
        rows = []
        for mask in predicted:
            counts = torch.bincount(mask.flatten(), minlength=k).double() / mask.numel()
            order = counts.argsort(descending=True).tolist()
            rows.append({"coverage": {info.classes[i]: round(counts[i].item(), 6) for i in order if counts[i] > 0}})
        return rows

    def prediction_header(self, top_k: int) -> list[str]:
        return ["coverage", "mask"]

    def prediction_cells(self, output: dict[str, Any], top_k: int) -> list[str]:
        shown = list(output["coverage"].items())[: max(top_k, 1)]
        more = len(output["coverage"]) - len(shown)
        coverage = ", ".join(f"{name} {share:.1%}" for name, share in shown) + (f", {more} more" if more else "")
        return [coverage, output.get("mask", "")]

    def write_predictions(
        self, folder: Path, names: list[str], outputs: torch.Tensor, sizes: list[tuple[int, int]], info: DataInfo
    ) -> list[Path]:
        """A mask PNG per input in `folder`, at the input's own size (the argmax, stretched back by nearest
        neighbour), named after the input (input 2 of the same name: NAME-2.png)."""
        from netspec.data.segmentation import resize_mask, write_mask

        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        taken: dict[str, int] = {}
        for name, out, (h, w) in zip(names, outputs, sizes, strict=True):
            stem = Path(name).stem
            taken[stem] = taken.get(stem, 0) + 1
            path = folder / (f"{stem}.png" if taken[stem] == 1 else f"{stem}-{taken[stem]}.png")
            write_mask(path, resize_mask(out.argmax(0), h, w))
            written.append(path)
        return written


# --- the registry ------------------------------------------------------------------------------

TASKS: dict[str, Task] = {task.name: task for task in (Classification(), Regression(), Multilabel(), Segmentation())}
assert tuple(TASKS) == choices(TaskName), "tasks.TASKS must hold one Task per config.TaskName"
assert {f"val_{m}" for task in TASKS.values() for m in task.metric_names} | {"val_loss"} == set(choices(Monitor)), (
    "config.Monitor must name val_loss and every task's metrics"
)
DEFAULT_TASK = "classification"  # a run that names no task, and a checkpoint from before tasks


def task_named(name: str | None) -> Task:
    return TASKS[name or DEFAULT_TASK]


def task_of(cfg: TrainConfig) -> Task:
    """The task of a run's settings (classification when they name none)."""
    return task_named(cfg.task)


# --- cells -------------------------------------------------------------------------------------


def _shape(shape: tuple[int, ...]) -> str:
    from netspec.layers import format_shape

    return format_shape(shape)


def _label_number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _classes(values: list[str], numbers: list[float | None]) -> tuple[tuple[str, ...], torch.Tensor]:
    """Class names in order (numbers numerically, one class per value: 1, 1.0 and 01 are one class; strings
    alphabetically) and each row's class index."""
    if all(n is not None for n in numbers):
        names = [str(int(n)) if n == int(n) else repr(n) for n in numbers]  # type: ignore[arg-type]
        ordered = sorted(set(zip(numbers, names, strict=True)))
        index = {name: i for i, (_, name) in enumerate(ordered)}
        return tuple(name for _, name in ordered), torch.tensor([index[name] for name in names], dtype=torch.long)
    ordered_names = sorted(set(values))
    index = {name: i for i, name in enumerate(ordered_names)}
    return tuple(ordered_names), torch.tensor([index[v] for v in values], dtype=torch.long)


def _target_number(path: Path, line: int, column: str, cell: str) -> float:
    value = _label_number(cell.strip()) if cell.strip() else None
    if value is None:
        shown = cell if len(cell) <= 30 else cell[:27] + "..."
        what = "the cell is empty" if not cell.strip() else f"{shown!r} is not a number"
        raise BadDataError(f"{path}:{line}: column {column!r} (a regression target): {what}")
    return value


def _figure(value: float) -> str:
    """A metric or a value as a table shows it: 4 significant digits (an integer count as it is)."""
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _zero_or_one(cell: str) -> float | None:
    value = _label_number(cell.strip())
    return value if value in (0.0, 1.0) else None
