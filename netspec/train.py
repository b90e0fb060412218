"""Stage 5: train a spec on a dataset, with checkpoints, metrics and plots in a run folder.

The loop is deliberately plain (in the spirit of nanoGPT's train.py): data are
batches from a `DeviceLoader`, one step is forward, loss, backward, optimizer and
scheduler step. Around it: a run folder with atomic checkpoints, resumable from any
interruption (SIGINT/SIGTERM save the exact mid-epoch state), and a stop with the
last good checkpoint intact when the loss stops being finite.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError
from torch import nn

from netspec import distributed
from netspec.compiler import SpecNet, build, load_weights
from netspec.config import TrainConfig
from netspec.data import DatasetInfo, DeviceLoader, dataset_info, load_split
from netspec.device import autocast, resolve_device
from netspec.distributed import SINGLE, Dist, check_batch_size
from netspec.errors import CheckpointError, Interrupted, TrainingDiverged, UsageError
from netspec.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    ensure_writable_dir,
    load_checkpoint,
    save_checkpoint,
)
from netspec.layers import format_shape
from netspec.spec import Spec, load_spec, validate_spec


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    examples_per_sec: float
    lr: float
    seconds: float
    examples: int = 0  # training examples seen in the epoch (over all processes)


@dataclass
class TrainResult:
    epochs: list[EpochMetrics]
    device: str
    run_dir: str
    confusion: list[list[int]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    @property
    def last(self) -> EpochMetrics:
        return self.epochs[-1]

    def to_dict(self) -> dict[str, Any]:
        keys = ("epoch", "train_loss", "train_accuracy", "test_accuracy", "examples_per_sec", "examples")
        return {
            "epochs": [{k: getattr(m, k) for k in keys} for m in self.epochs],
            "test_accuracy": self.last.test_accuracy,
            "train_loss": self.last.train_loss,
            "train_accuracy": self.last.train_accuracy,
            "examples_per_sec": self.last.examples_per_sec,
            "device": self.device,
            "run_dir": self.run_dir,
        }


# --- settings ----------------------------------------------------------------------------------


def resolve_config(spec: Spec, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The spec's train section with command-line overrides applied and validated."""
    data = spec.train.model_dump()
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-") if first["loc"] else "train"
        raise UsageError(f"{name}: {first['msg'][0].lower()}{first['msg'][1:]}, got {first.get('input')!r}") from None


def init_weights(model: nn.Module, scheme: str) -> None:
    """xavier_uniform (as d2l's train_ch6), kaiming, or torch's default initialization."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if scheme == "xavier_uniform":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


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


# --- evaluation --------------------------------------------------------------------------------


@torch.inference_mode()
def evaluate(
    model: nn.Module, loader: DeviceLoader, num_classes: int, amp: str = "none", dist: Dist = SINGLE
) -> tuple[float, torch.Tensor]:
    """Accuracy and confusion matrix (rows: true class, columns: predicted); in a distributed run each
    rank evaluates its share of the test split and the confusion matrices are summed."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=loader.device)
    for x, y in loader:
        with autocast(loader.device, amp):
            pred = model(x).argmax(1)
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes)
    model.train(was_training)
    dist.sum_(confusion)
    confusion = confusion.view(num_classes, num_classes).cpu()
    return confusion.trace().item() / max(int(confusion.sum()), 1), confusion


# --- run folder --------------------------------------------------------------------------------


def new_run_dir(name: str, out: str | Path | None) -> Path:
    if out is not None:
        return ensure_writable_dir(Path(out))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return ensure_writable_dir(path)


def write_metrics(run_dir: Path, epochs: list[EpochMetrics]) -> None:
    rows = [asdict(m) for m in epochs]
    atomic_write_json(run_dir / "metrics.json", rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(EpochMetrics.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())


def plot_curves(path: Path, epochs: list[EpochMetrics], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [m.epoch for m in epochs]
    ax.plot(xs, [m.train_loss for m in epochs], "-o", label="train loss")
    ax.plot(xs, [m.train_accuracy for m in epochs], "--s", label="train acc")
    ax.plot(xs, [m.test_accuracy for m in epochs], "-.^", label="test acc")
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_xlim(0.8, max(xs) + 0.2)
    _save_figure(fig, path)


def plot_confusion(path: Path, confusion: torch.Tensor, classes: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    _save_figure(fig, path)


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


# --- signals -----------------------------------------------------------------------------------


@contextmanager
def _stop_requests() -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no signal handling
        pass
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- training ----------------------------------------------------------------------------------


@dataclass
class _Progress:
    """Sums of the current epoch, kept so an interrupted epoch resumes exactly."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


Reporter = Callable[[str], None]


class Trainer:
    """One training run: everything `train()` needs, kept together for checkpoints."""

    def __init__(
        self,
        spec: Spec,
        cfg: TrainConfig,
        report: Reporter,
        progress: bool,
        dist: Dist = SINGLE,
        device: torch.device | None = None,
        sync_bn: bool | None = None,
    ) -> None:
        # Everything that can fail on bad input (device, data, shapes) happens here, before
        # any file is written: a failed start leaves no partial run folder behind.
        # In a distributed run (`dist`, see netspec.distributed) only rank 0 reports and writes.
        self.spec, self.cfg, self.dist = spec, cfg, dist
        self.report = report if dist.is_main else (lambda line: None)
        self.show_progress = progress and dist.is_main
        self.run_dir = Path()
        self.device = device or resolve_device(cfg.device)
        check_batch_size(cfg.batch_size, dist)
        self.info = checked_dataset(spec, cfg)
        self.train_loader = make_loader(spec, cfg, self.info, self.device, train=True, dist=dist)
        self.test_loader = make_loader(spec, cfg, self.info, self.device, train=False, dist=dist)

        torch.manual_seed(cfg.seed)
        model = build(spec)
        assert isinstance(model, SpecNet)
        init_weights(model, cfg.init)
        self.model: SpecNet = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        wrapped = distributed.wrap(self.model, dist, self.device, sync_bn)  # DDP; the model itself if one process
        self.forward: nn.Module = torch.compile(wrapped) if cfg.compile else wrapped
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg, len(self.train_loader))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        # One process: the batch's mean loss. Several: this rank's summed loss, weighted below by its share of
        # the global batch, so that DDP's average of the ranks' gradients is the global batch's mean.
        self.loss_fn = nn.CrossEntropyLoss(
            label_smoothing=cfg.label_smoothing, reduction="sum" if dist.active else "mean"
        )
        self.epochs: list[EpochMetrics] = []
        self.epoch = 0  # completed epochs
        self.batch = 0  # completed batches of the current epoch
        self.partial = _Progress()
        self.best = -1.0
        self.confusion: torch.Tensor | None = None  # of the last evaluation in this call

    # -- checkpoints --

    def state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "spec": self.spec.to_data(),
            "train_config": self.cfg.model_dump(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch": self.batch,
            "partial": asdict(self.partial),
            "metrics": [asdict(m) for m in self.epochs],
            "best_test_accuracy": self.best,
            "rng": rng,
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler and ckpt["scheduler"]:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.epoch, self.batch = int(ckpt["epoch"]), int(ckpt["batch"])
            self.partial = _Progress(**ckpt["partial"])
            self.epochs = [EpochMetrics(**m) for m in ckpt["metrics"]]
            self.best = float(ckpt["best_test_accuracy"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            if "cuda" in ckpt["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not fit this run: {exc}") from None

    def save(self, best: bool = False) -> Path:
        """Write last.pt (and best.pt, the same bytes) from the current state (rank 0 only)."""
        path = self.run_dir / "last.pt"
        if self.dist.is_main:
            save_checkpoint([path, self.run_dir / "best.pt"] if best else [path], self.state())
        return path

    # -- the loop --

    def run(self, on_epoch: Callable[[EpochMetrics], None] | None = None) -> TrainResult:
        """Train to cfg.epochs; `on_epoch` sees each epoch's metrics after they are saved (a sweep
        reports them to its pruner, which may stop the run by raising)."""
        cfg = self.cfg
        self.model.train()
        if self.epoch == 0 and self.batch == 0:
            self.save()  # a run folder always holds a loadable checkpoint
            if self.dist.is_main:
                write_metrics(self.run_dir, self.epochs)
        with _stop_requests() as stop:
            while self.epoch < cfg.epochs:
                self._train_epoch(stop)
                metrics = self._finish_epoch()
                self.report(
                    f"epoch {metrics.epoch}/{cfg.epochs}: loss {metrics.train_loss:.3f}, "
                    f"train acc {metrics.train_accuracy:.3f}, test acc {metrics.test_accuracy:.3f}, "
                    f"{metrics.examples_per_sec:.1f} examples/sec on {self.device}"
                )
                if on_epoch is not None:
                    on_epoch(metrics)
        if not self.epochs:
            raise UsageError("nothing to train: the run has no epochs")
        if self.confusion is None:  # resumed a finished run: nothing was evaluated in this call
            _, self.confusion = evaluate(self._evaluated, self.test_loader, len(self.info.classes), cfg.amp, self.dist)
        if self.dist.is_main:
            self._write_plots(self.confusion)
        return TrainResult(
            self.epochs, str(self.device), str(self.run_dir), self.confusion.tolist(), list(self.info.classes)
        )

    def _train_epoch(self, stop: list[int]) -> None:
        cfg, loader, p = self.cfg, self.train_loader, self.partial
        # On CUDA, reading the loss every step would synchronize; check it every few steps.
        check_every = 1 if self.device.type == "cpu" else 20
        # Running sums continue from the saved partial epoch, so a resumed epoch adds up exactly
        # the same numbers in the same order as an uninterrupted one (float64 where supported).
        sum_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        # The saved sums are global; in a distributed run rank 0 carries them and the others start at 0.
        carried = p if self.dist.is_main else _Progress()
        loss_sum = torch.tensor(carried.loss_sum, dtype=sum_dtype, device=self.device)
        correct = torch.tensor(carried.correct, dtype=torch.long, device=self.device)
        seen = carried.seen
        start = time.perf_counter()
        bar = self._progress_bar()
        with bar:
            task = bar.add_task(
                f"epoch {self.epoch + 1}/{cfg.epochs}",
                total=len(loader),
                completed=self.batch,
                loss=math.nan,
                speed=0.0,
            )
            for x, y, weight in self._batches():
                with autocast(self.device, cfg.amp):
                    logits = self.forward(x)
                    loss = self.loss_fn(logits.float(), y)
                if self.dist.active:
                    loss = loss * weight
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if cfg.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.scheduler:
                    self.scheduler.step()
                if weight:  # (0: a stand-in example for a rank the last short batch left nothing)
                    n = len(y)
                    loss_sum += loss.detach() * n if not self.dist.active else loss.detach() / weight
                    correct += (logits.detach().argmax(1) == y).sum()
                    seen += n
                self.batch += 1
                stopping = bool(stop)
                if self.batch % check_every == 0 or self.batch == len(loader):
                    value = loss.item()
                    finite = math.isfinite(value)
                    if self.dist.active:  # every rank takes the same decision, at the same step
                        flags = torch.tensor([float(stopping), float(not finite)])
                        self.dist.max_(flags)
                        stopping, finite = bool(flags[0]), not bool(flags[1])
                    if not finite:
                        raise TrainingDiverged(
                            f"loss became {value} at epoch {self.epoch + 1}, step {self.batch}; "
                            f"stopped, the last good checkpoint is {self.run_dir / 'last.pt'}"
                        )
                    if self.batch % 10 == 0 and not bar.disable:
                        elapsed = p.seconds + time.perf_counter() - start
                        bar.update(task, completed=self.batch, loss=value, speed=seen / max(elapsed, 1e-9))
                elif self.dist.active:
                    stopping = False  # decided together at the next check
                if stopping:
                    self._close_partial(loss_sum, correct, seen, start)
                    path = self.save()
                    raise Interrupted(
                        f"interrupted at epoch {self.epoch + 1}, step {self.batch}; saved {path}. "
                        f"Resume with: netspec train --resume {self.run_dir}"
                    )
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._close_partial(loss_sum, correct, seen, start)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """(x, y, weight) of the current epoch from the current batch on; in a distributed run, this rank's
        share of each global batch."""
        if self.dist.active:
            return self.train_loader.shard_batches(self.epoch, self.batch)
        return ((x, y, 1.0) for x, y in self.train_loader.batches(self.epoch, self.batch))

    def _close_partial(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, start: float) -> None:
        """Record the epoch's running sums (over all processes) in self.partial."""
        seconds = torch.tensor([self.partial.seconds + time.perf_counter() - start])
        counts = torch.tensor([seen], dtype=torch.long)
        sums = loss_sum.cpu()
        if self.dist.active:
            self.dist.sum_(sums, counts)
            correct = correct.cpu()
            self.dist.sum_(correct)
            self.dist.max_(seconds)
        self.partial.loss_sum, self.partial.correct = sums.item(), int(correct.item())
        self.partial.seen, self.partial.seconds = int(counts.item()), float(seconds.item())

    def _finish_epoch(self) -> EpochMetrics:
        p = self.partial
        test_accuracy, self.confusion = evaluate(
            self._evaluated, self.test_loader, len(self.info.classes), self.cfg.amp, self.dist
        )
        metrics = EpochMetrics(
            epoch=self.epoch + 1,
            train_loss=p.loss_sum / max(p.seen, 1),
            train_accuracy=p.correct / max(p.seen, 1),
            test_accuracy=test_accuracy,
            examples_per_sec=p.seen / max(p.seconds, 1e-9),
            lr=self.optimizer.param_groups[0]["lr"],
            seconds=p.seconds,
            examples=p.seen,
        )
        self.epochs.append(metrics)
        self.epoch += 1
        self.batch = 0
        self.partial = _Progress()
        improved = test_accuracy > self.best
        self.best = max(self.best, test_accuracy)
        self.save(best=improved)
        if self.dist.is_main:
            write_metrics(self.run_dir, self.epochs)
        return metrics

    @property
    def _evaluated(self) -> nn.Module:
        # Evaluation runs on each rank's own share without DDP, whose forward would expect every rank
        # to make the same number of calls.
        return self.model if self.dist.active else self.forward

    def _write_plots(self, confusion: torch.Tensor) -> None:
        title = f"{self.spec.name} on {self.cfg.dataset}"
        plot_curves(self.run_dir / "curves.png", self.epochs, title)
        plot_confusion(self.run_dir / "confusion.png", confusion, list(self.info.classes), title)

    def _progress_bar(self) -> Any:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  {task.fields[speed]:,.0f} ex/s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not (self.show_progress and console.is_terminal),
        )


def checked_dataset(spec: Spec, cfg: TrainConfig) -> DatasetInfo:
    """The dataset of `cfg`, refused before any work if its images do not fit the spec's input."""
    info = dataset_info(cfg.dataset, tuple(spec.input))
    wanted = tuple(spec.input)
    same_channels = len(wanted) == len(info.sample_shape) == 3 and wanted[0] == info.sample_shape[0]
    if wanted != info.sample_shape and not (cfg.resize and same_channels):
        hint = (
            " (add --resize, or resize: true in the train section, to resize them on the fly)" if same_channels else ""
        )
        raise UsageError(
            f"spec {spec.name} takes input {format_shape(wanted)} but dataset {info.name} "
            f"has images of {format_shape(info.sample_shape)}{hint}"
        )
    return info


def make_loader(
    spec: Spec, cfg: TrainConfig, info: DatasetInfo, device: torch.device, train: bool, dist: Dist = SINGLE
) -> DeviceLoader:
    """The training split (shuffled, maybe augmented) or the test split, on `device`."""
    data = load_split(cfg.dataset, cfg.data_root, train, cfg.download, tuple(spec.input), cfg.synthetic_size)
    batch_size = cfg.batch_size if train else cfg.test_batch_size
    return DeviceLoader(
        data,
        info,
        batch_size,
        device,
        shuffle=train,
        augment=train and cfg.augment,
        seed=cfg.seed,
        channels_last=cfg.channels_last,
        resize_to=tuple(spec.input[1:]) if cfg.resize and tuple(spec.input) != info.sample_shape else None,
        shard=(dist.rank, dist.world),
    )


def train(
    spec: Spec | str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    report: Reporter = print,
    progress: bool = True,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    backend: str | None = None,
    sync_bn: bool | None = None,
) -> TrainResult:
    """Train a spec (or resume a run folder) and return its metrics.

    `overrides` replace fields of the spec's train section (e.g. {"epochs": 3}). Started by torchrun
    (or `netspec train --nproc-per-node N`), each process trains its share and rank 0 writes the run
    folder; see netspec.distributed.
    """
    if resume is not None:
        return _resume(Path(resume), report, progress, on_epoch, backend, sync_bn)
    if spec is None:
        raise UsageError("give a spec to train, or --resume RUN_DIR")
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    cfg = resolve_config(spec, overrides)
    spec = spec.model_copy(update={"train": cfg})
    dist, device = distributed.from_environment(resolve_device(cfg.device), backend)
    trainer = Trainer(spec, cfg, report, progress, dist, device, sync_bn)
    run_dir = new_run_dir(spec.name, out) if dist.is_main else None
    trainer.run_dir = Path(dist.from_main(str(run_dir) if run_dir else None))
    if dist.is_main:
        atomic_write_text(trainer.run_dir / "spec.yaml", yaml.safe_dump(spec.to_data(), sort_keys=False))
    return trainer.run(on_epoch)


def _resume(
    run_dir: Path,
    report: Reporter,
    progress: bool,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    backend: str | None = None,
    sync_bn: bool | None = None,
) -> TrainResult:
    if not run_dir.is_dir():
        raise UsageError(f"--resume {run_dir}: no such run folder")
    if not (run_dir / "last.pt").exists():
        raise CheckpointError(f"--resume {run_dir}: the run folder holds no checkpoint (last.pt); start the run again")
    ckpt = load_checkpoint(run_dir / "last.pt")
    try:
        spec = validate_spec(ckpt["spec"])
        cfg = TrainConfig.model_validate(ckpt["train_config"])
    except (KeyError, ValidationError) as exc:
        raise CheckpointError(f"{run_dir / 'last.pt'}: its spec or settings are unreadable ({exc})") from None
    dist, device = distributed.from_environment(resolve_device(cfg.device), backend)
    if dist.is_main:
        for stale in run_dir.glob(".*.tmp"):  # left by a write that a kill interrupted
            stale.unlink(missing_ok=True)
    trainer = Trainer(spec, cfg, report, progress, dist, device, sync_bn)
    trainer.run_dir = run_dir
    trainer.load_state(ckpt)
    if trainer.epoch >= cfg.epochs:
        report(f"{run_dir} already finished its {cfg.epochs} epochs")
    return trainer.run(on_epoch)


def evaluate_checkpoint(
    spec: Spec | str | Path, checkpoint: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[float, torch.Tensor, list[str]]:
    """Test accuracy and confusion matrix of a saved model."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    cfg = resolve_config(spec, overrides)
    device = resolve_device(cfg.device)
    info = checked_dataset(spec, cfg)
    model = build(spec)
    load_weights(model, checkpoint)
    model.to(device)
    loader = make_loader(spec, cfg, info, device, train=False)
    accuracy, confusion = evaluate(model, loader, len(info.classes), cfg.amp)
    return accuracy, confusion, list(info.classes)
