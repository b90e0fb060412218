"""Every picture a run or a sweep writes (PNG, with matplotlib's Agg backend, written atomically).

Training's loss/accuracy curves and confusion matrix, and a sweep's per-trial curves, train/validation gap,
grid heatmap and Optuna's own plots. The callers prepare plain numbers; nothing here knows what a run folder
or a trial is.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netspec.fileio import atomic_write_bytes

if TYPE_CHECKING:
    import torch

    from netspec.metrics import EpochMetrics


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: files only, never a window (the one backend choice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Write `fig` as a PNG to `path` atomically and close it."""
    import matplotlib.pyplot as plt  # (already imported by whoever drew `fig`; no backend switch here)

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


# --- a training run ----------------------------------------------------------------------------


def plot_curves(
    path: Path,
    epochs: list[EpochMetrics],
    title: str,
    steps: list[list[float]] | None = None,
    metric: tuple[str, str] = ("accuracy", "acc"),
) -> None:
    """Loss (per training step, and per epoch for val/test) and a metric (its column's name after split_, and
    its short label: a classifier's accuracy) on two panels sharing the epoch axis, so that a one-epoch run
    shows a real curve."""
    metric, label = metric
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    xs = [m.epoch for m in epochs]
    size = 5 if len(xs) <= 20 else 0  # markers help a few epochs; on many they only clutter
    if steps:
        sx, sy = zip(*steps, strict=True)
        loss_ax.plot(sx, sy, "-", color="tab:blue", alpha=0.35, linewidth=0.8, label="train loss (steps)")
    loss_ax.plot(
        xs, [m.train_loss for m in epochs], "-o", color="tab:blue", label="train loss (epoch)", markersize=size
    )
    for key, style, color in (("val", "--s", "tab:orange"), ("test", "-.^", "tab:green")):
        points = [(m.epoch, getattr(m, f"{key}_loss")) for m in epochs if getattr(m, f"{key}_loss") is not None]
        if points:
            loss_ax.plot(*zip(*points, strict=True), style, color=color, label=f"{key} loss", markersize=size)
        points = [(m.epoch, m.get(f"{key}_{metric}")) for m in epochs if m.get(f"{key}_{metric}") is not None]
        if points:
            acc_ax.plot(*zip(*points, strict=True), style, color=color, label=f"{key} {label}", markersize=size)
    acc_ax.plot(xs, [m.get(f"train_{metric}") for m in epochs], "-o", color="tab:blue", label=f"train {label}",
                markersize=size)  # fmt: skip
    loss_ax.set_ylabel("loss")
    acc_ax.set_ylabel(metric.replace("_", " "))
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))  # decimals as the range needs
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.set_xlim(0, max(xs) + 0.1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)


def plot_confusion(path: Path, confusion: torch.Tensor, classes: list[str], title: str) -> None:
    plt = pyplot()
    normalized = confusion.float() / confusion.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n), dpi=100)
    im = ax.imshow(normalized.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            v = normalized[i, j].item()
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_figure(fig, path)


def plot_scatter(path: Path, predicted: torch.Tensor, true: torch.Tensor, names: list[str], title: str) -> None:
    """Regression: predicted against true values (in the targets' units), one panel per target, with the
    diagonal where a perfect model's points lie."""
    plt = pyplot()
    n = max(len(names), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), dpi=100, squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], names, strict=False)):
        xs, ys = true[:, i].tolist() if len(true) else [], predicted[:, i].tolist() if len(predicted) else []
        ax.scatter(xs, ys, s=8, alpha=0.6, color="tab:blue")
        if xs:
            low, high = min(xs + ys), max(xs + ys)
            ax.plot([low, high], [low, high], "--", color="gray", linewidth=1)
        ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, path)


def plot_label_bars(path: Path, names: list[str], f1: list[float], accuracy: list[float], title: str) -> None:
    """Multilabel: each label's F1 and accuracy."""
    plt = pyplot()
    xs = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.7 * len(names)), 3.6), dpi=100)
    ax.bar([x - 0.2 for x in xs], f1, 0.4, label="F1")
    ax.bar([x + 0.2 for x in xs], accuracy, 0.4, label="accuracy")
    ax.set_xticks(xs, names, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(title)
    save_figure(fig, path)


def plot_masks(
    path: Path,
    true: torch.Tensor,
    predicted: torch.Tensor,
    classes: list[str],
    iou: dict[str, float | None],
    title: str,
) -> None:
    """Segmentation: a few masks of the report split, each true mask above the predicted one, in the colours of
    the mask PNGs `netspec predict` writes (VOC's; pixels left out in gray), and each class's IoU in the legend."""
    import torch
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from netspec.data.segmentation import voc_palette

    plt = pyplot()
    palette = voc_palette()
    colours = [tuple(v / 255 for v in palette[3 * (i % 256) : 3 * (i % 256) + 3]) for i in range(len(classes))]
    cmap = ListedColormap([(0.6, 0.6, 0.6), *colours])  # index 0: pixels left out
    n = max(len(true), 1)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n + 0.6, 4.6), dpi=100, squeeze=False)
    for column in range(n):
        for row, (masks, name) in enumerate(((true, "true"), (predicted, "predicted"))):
            ax = axes[row][column]
            ax.set_xticks([])
            ax.set_yticks([])
            if column < len(masks):
                shown = torch.where(masks[column] >= 0, masks[column] + 1, 0)
                ax.imshow(shown.numpy(), cmap=cmap, vmin=0, vmax=len(classes), interpolation="nearest")
            if column == 0:
                ax.set_ylabel(name)
    labels = [name if iou.get(name) is None else f"{name} (IoU {iou[name]:.2f})" for name in classes]
    handles = [Patch(facecolor=colour, edgecolor="gray", label=label) for colour, label in zip(colours, labels, strict=True)]
    # beside the last column: tight_layout (in save_figure) makes room for an axes' legend
    axes[0][-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.05, 1.0), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


# --- a sweep -----------------------------------------------------------------------------------


@dataclass
class TrialCurve:
    """One trial's line in the sweep's curves: per epoch, its selection accuracy and training loss."""

    label: str
    complete: bool  # drawn solid; a pruned or failed trial is dotted
    epochs: list[int]
    accuracy: list[float | None]
    train_loss: list[float]


def plot_trial_curves(path: Path, curves: list[TrialCurve]) -> None:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for curve in curves:
        style = "-o" if curve.complete else ":x"
        acc_ax.plot(curve.epochs, curve.accuracy, style, label=curve.label, markersize=4)
        loss_ax.plot(curve.epochs, curve.train_loss, style, label=curve.label, markersize=4)
    acc_ax.set(
        xlabel="epoch", ylabel="validation accuracy", title="validation accuracy per trial (dotted: pruned/failed)"
    )
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="train loss per trial", yscale="log")
    for ax in (acc_ax, loss_ax):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = acc_ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.subplots_adjust(right=0.72, wspace=0.3)
    save_figure(fig, path)


def plot_gap(path: Path, labels: list[str], train_accuracy: list[float], val_accuracy: list[float]) -> None:
    """Train beside validation accuracy per trial (the gap is overfitting)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(labels) + 2), 4.5), dpi=100)
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], train_accuracy, 0.4, label="train accuracy")
    ax.bar([x + 0.2 for x in xs], val_accuracy, 0.4, label="validation accuracy")
    ax.set_xticks(list(xs), labels, rotation=40, ha="right", fontsize=7)
    low = min(val_accuracy + train_accuracy, default=0.0)
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_ylabel("accuracy")
    ax.set_title("train vs validation accuracy per trial (the gap is overfitting)")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_heatmap(
    path: Path, grid: list[list[float]], notes: list[list[str]], x: tuple[str, list[Any]], y: tuple[str, list[Any]]
) -> None:
    """A 2-D grid's validation accuracies (rows: y's values, columns: x's); a NaN cell is left blank with its
    note (the trial's state) written in it."""
    plt = pyplot()
    (kx, vx), (ky, vy) = x, y
    values = [v for line in grid for v in line if not math.isnan(v)]
    fig, ax = plt.subplots(figsize=(1.3 * len(vx) + 2.5, 1.0 * len(vy) + 1.8), dpi=100)
    image = ax.imshow(grid, cmap="viridis")
    ax.set_xticks(range(len(vx)), [str(v) for v in vx])
    ax.set_yticks(range(len(vy)), [str(v) for v in vy])
    ax.set(xlabel=kx, ylabel=ky, title="validation accuracy")
    for i, line in enumerate(grid):
        for j, value in enumerate(line):
            if math.isnan(value):
                ax.text(j, i, notes[i][j], ha="center", va="center", color="#b00020", fontsize=8)
                continue
            light = value > (min(values) + max(values)) / 2
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="black" if light else "white", fontsize=8)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save_figure(fig, path)


def write_optuna_plots(study: Any, folder: Path) -> list[str]:
    """Optuna's own parameter-importance and parallel-coordinate plots; returns the names written."""
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    for name, plot, size in (
        ("importance.png", optuna_plots.plot_param_importances, (6, 3.5)),
        ("parallel.png", optuna_plots.plot_parallel_coordinate, (8, 4.5)),
    ):
        ax = plot(study)
        ax.figure.set_size_inches(*size)
        ax.figure.tight_layout()
        save_figure(ax.figure, folder / name)
        written.append(name)
    return written
