"""Stage 5: train a spec on a dataset, with checkpoints, metrics and plots in a run folder.

The loop is deliberately plain (in the spirit of nanoGPT's train.py): data are
batches from a `DeviceLoader`, one step is forward, loss, backward, optimizer and
scheduler step. Around it: a run folder with atomic checkpoints, resumable from any
interruption (SIGINT/SIGTERM save the exact mid-epoch state), and a stop with the
last good checkpoint intact when the loss stops being finite.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from netspec import distributed, runfolder
from netspec.compiler import SpecNet, build, check_memory
from netspec.config import Augment, TrainConfig
from netspec.data import Data, DataInfo, DeviceLoader, Examples, open_data
from netspec.device import resolve_device
from netspec.distributed import ONE_PROCESS, Dist, check_batch_size
from netspec.engine import TrainStep, make_scheduler, optimizer_for
from netspec.errors import CheckpointError, DataError, Interrupted, TrainingDiverged, UsageError
from netspec.layers import format_shape
from netspec.metrics import EpochMetrics, Evaluation, TrainResult, evaluate
from netspec.plots import plot_curves
from netspec.runfolder import RunDir
from netspec.shapes import NetShape, infer_shapes, rows_of
from netspec.spec import Spec, load_spec, validate_spec
from netspec.tasks import Meter, Task, task_of
from netspec.weights import freeze, init_weights, start_from

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


# --- run folder --------------------------------------------------------------------------------


def new_run_dir(name: str, out: str | Path | None) -> Path:
    """Where a new run goes: --out, or a fresh numbered folder under runs/ (nothing is created here; the run
    claims the folder with netspec.runfolder.claim before it writes)."""
    if out is not None:
        return Path(out)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-{stamp}"
    return base if not base.exists() else runfolder.free_name(base)


# --- signals -----------------------------------------------------------------------------------


@contextmanager
def stop_requests() -> Iterator[list[int]]:
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
    correct: int = 0  # what checkpoints from before tasks kept of a classifier's running metric (now in `sums`)
    seen: int = 0
    seconds: float = 0.0
    sums: list[float] = field(default_factory=list)  # the task's running statistics (Task.batch_stats, full=False)


@dataclass
class Selection:
    """How best.pt and early stopping stand: carried over a resume."""

    on: str = "val_accuracy"  # the metric best.pt is chosen on (Trainer.selected_on)
    best_accuracy: float = -1.0  # the best score of `on` so far (higher is better: a loss is negated)
    best_epoch: int | None = None
    monitor_best: float | None = None  # the best value of cfg.monitor so far (patience)
    stale_epochs: int = 0  # epochs since monitor_best last improved
    stopped_early: bool = False


@dataclass
class ResumeState:
    """A checkpoint's contents: what a run needs to continue exactly where it stopped, and what using the model
    later needs (the classes, the normalization of its inputs). `asdict` gives the dict saved in last.pt (its keys
    are the checkpoint format: unchanged, so that old checkpoints load); `from_dict` reads one back, including
    those of older versions (no `steps`; no `selection`, only `best_test_accuracy`)."""

    spec: dict[str, Any]
    train_config: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any]
    epoch: int  # completed epochs
    batch: int  # completed batches of the current epoch
    partial: _Progress
    metrics: list[EpochMetrics]
    steps: list[list[float]]
    selection: Selection
    data: dict[str, Any]
    classes: list[str]
    normalization: dict[str, list[float]]
    rng: dict[str, torch.Tensor]

    def asdict(self) -> dict[str, Any]:
        # Not dataclasses.asdict, which would deep-copy every tensor of the model and optimizer.
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        return {
            **state,
            "partial": asdict(self.partial),
            "metrics": [m.state() for m in self.metrics],
            "selection": asdict(self.selection),
        }

    @classmethod
    def from_dict(cls, ckpt: dict[str, Any]) -> ResumeState:
        """Raises KeyError, TypeError or ValueError for a checkpoint that lacks what a resume needs."""
        selection = ckpt.get("selection") or {"best_accuracy": ckpt.get("best_test_accuracy", -1.0)}
        return cls(
            spec=ckpt.get("spec", {}),
            train_config=ckpt.get("train_config", {}),
            model=ckpt["model"],
            optimizer=ckpt["optimizer"],
            scheduler=ckpt["scheduler"],
            scaler=ckpt["scaler"],
            epoch=int(ckpt["epoch"]),
            batch=int(ckpt["batch"]),
            partial=_Progress(**ckpt["partial"]),
            metrics=[EpochMetrics.from_row(m) for m in ckpt["metrics"]],
            steps=[list(map(float, step)) for step in ckpt.get("steps", [])],
            selection=Selection(
                on=selection.get("on", "val_accuracy"),
                best_accuracy=float(selection["best_accuracy"]),
                best_epoch=selection.get("best_epoch"),
                monitor_best=selection.get("monitor_best"),
                stale_epochs=int(selection.get("stale_epochs", 0)),
                stopped_early=bool(selection.get("stopped_early", False)),
            ),
            data=ckpt.get("data", {}),
            classes=list(ckpt.get("classes", [])),
            normalization=ckpt.get("normalization", {}),
            rng=ckpt["rng"],
        )


Reporter = Callable[[str], None]


class Trainer:
    """One training run: everything `train()` needs, kept together for checkpoints."""

    def __init__(
        self,
        spec: Spec,
        cfg: TrainConfig,
        run_dir: Path,
        report: Reporter,
        progress: bool,
        dist: Dist = ONE_PROCESS,
        device: torch.device | None = None,
        sync_bn: bool | None = None,
        recorded_split: dict[str, list[int]] | None = None,
        resume_from: dict[str, Any] | None = None,
    ) -> None:
        # Everything that can fail on bad input (device, data, shapes, weights to start from) happens here,
        # before any file is written: a failed start leaves no partial run folder behind.
        # In a distributed run (`dist`, see netspec.distributed) only rank 0 reports and writes.
        # `resume_from`: a checkpoint (last.pt) to continue from; its weights replace cfg.init_from's.
        self.spec, self.cfg, self.dist = spec, cfg, dist
        self.report = report if dist.is_main else (lambda line: None)
        self.show_progress = progress and dist.is_main
        self.run_dir = run_dir
        self.folder = RunDir(run_dir)
        self.device = device or resolve_device(cfg.device)
        self.task: Task = task_of(cfg)
        self.task.check_settings(cfg)
        self.columns = self.task.columns()
        check_batch_size(cfg.batch_size, dist)
        net = infer_shapes(spec)
        check_memory(net)  # a width of 1e9 is refused before the data is read
        self.data = load_data(net, cfg, recorded_split)
        self.info = self.data.info
        for note in self.data.notes:
            self.report(note)
        self.train_loader = make_loader(spec, cfg, self.data, self.data.train, self.device, train=True, dist=dist)
        self.val_loader, self.test_loader = (
            make_loader(spec, cfg, self.data, part, self.device, train=False, dist=dist) if part else None
            for part in (self.data.val, self.data.test)
        )
        # Selection (best.pt, early stopping, a sweep's pruner) uses validation; only with val_split 0 and no
        # validation split in the data does it fall back on test, and says so.
        # With neither split (too few examples to hold any out), best.pt is simply the last epoch.
        self.selection_metric = self.task.selection_metric(cfg)
        self.selected_on = (
            f"val_{self.selection_metric}" if self.val_loader is not None
            else f"test_{self.selection_metric}" if self.test_loader is not None
            else "last_epoch"
        )  # fmt: skip

        torch.manual_seed(cfg.seed)
        model = build(net)
        assert isinstance(model, SpecNet)
        init_weights(model, cfg.init)
        self.start_note = start_from(model, cfg) if cfg.init_from and resume_from is None else None
        self.trainable = freeze(model, cfg.freeze)
        self.model: SpecNet = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        wrapped = distributed.wrap(self.model, dist, self.device, sync_bn)  # DDP; the model itself if one process
        self.forward: nn.Module = torch.compile(wrapped) if cfg.compile else wrapped
        self.optimizer = optimizer_for(self.model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg, len(self.train_loader))
        # One process: the batch's mean loss. Several: this rank's summed loss, weighted by its share of the
        # global batch, so that DDP's average of the ranks' gradients is the global batch's mean.
        loss_fn = self.task.loss_fn(cfg, "sum" if dist.active else "mean")
        self.step = TrainStep(
            self.forward, self.optimizer, loss_fn, self.device, amp=cfg.amp, grad_clip=cfg.grad_clip,
            scheduler=self.scheduler,
        )  # fmt: skip
        self.epochs: list[EpochMetrics] = []
        self.steps: list[list[float]] = []  # [epoch + fraction, training loss] at each loss check
        self.epoch = 0  # completed epochs
        self.batch = 0  # completed batches of the current epoch
        self.partial = _Progress()
        self.best: float | None = None  # the best value of cfg.monitor (patience) so far
        self.best_accuracy = -math.inf  # the best selection score so far (best.pt; a loss is negated)
        self.best_epoch: int | None = None
        self.stale_epochs = 0  # epochs since `best` last improved
        self.stopped_early = False
        self.reported: Evaluation | None = None  # the report split's last evaluation in this call
        self.board: Any = None  # TensorBoard's SummaryWriter, when tensorboard is installed
        if resume_from is not None:
            self.load_state(resume_from)

    def describe(self) -> str:
        """The run's first line: its data, splits, parameters and where selection looks."""
        total = sum(p.numel() for p in self.model.parameters())
        frozen = f" ({self.trainable:,} trainable)" if self.trainable != total else ""
        metric = self.selection_metric.replace("_", " ")
        selection = f"best.pt chosen on validation {metric}"
        if self.selected_on.startswith("test_"):
            why = "val_split 0" if self.cfg.val_split == 0 else "too few examples to hold one out"
            selection = f"no validation split ({why}): best.pt is chosen on TEST {metric}"
        elif self.selected_on == "last_epoch":
            selection = "no validation or test split (too few examples to hold any out): best.pt is the last epoch"
        return (
            f"{self.spec.name} on {self.info.name}: {self.data.counts()} examples, "
            f"{self.task.count(len(self.info.classes))}; "
            f"{total:,} parameters{frozen}; {selection}"
        )

    # -- checkpoints --

    def state(self) -> dict[str, Any]:
        """The checkpoint of the run as it stands (ResumeState.asdict)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return ResumeState(
            spec=self.spec.to_data(),
            train_config=self.cfg.model_dump(),
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict() if self.scheduler else None,
            scaler=self.step.scaler.state_dict(),
            epoch=self.epoch,
            batch=self.batch,
            partial=self.partial,
            metrics=self.epochs,
            steps=self.steps,
            selection=Selection(
                on=self.selected_on,
                best_accuracy=self.best_accuracy,
                best_epoch=self.best_epoch,
                monitor_best=self.best,
                stale_epochs=self.stale_epochs,
                stopped_early=self.stopped_early,
            ),
            data=self.info.to_dict(),
            classes=list(self.info.classes),
            normalization={"mean": list(self.info.mean), "std": list(self.info.std)},
            rng=rng,
        ).asdict()

    def load_state(self, ckpt: dict[str, Any]) -> None:
        try:
            state = ResumeState.from_dict(ckpt)
            self.model.load_state_dict(state.model)
            self.optimizer.load_state_dict(state.optimizer)
            if self.scheduler and state.scheduler:
                self.scheduler.load_state_dict(state.scheduler)
            self.step.scaler.load_state_dict(state.scaler)
            self.epoch, self.batch = state.epoch, state.batch
            self.partial = state.partial
            self.epochs = state.metrics
            self.steps = state.steps
            selection = state.selection
            self.best_accuracy, self.best_epoch = selection.best_accuracy, selection.best_epoch
            self.best, self.stale_epochs = selection.monitor_best, selection.stale_epochs
            self.stopped_early = selection.stopped_early
            torch.set_rng_state(state.rng["torch"])
            if "cuda" in state.rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(state.rng["cuda"], self.device)
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not fit this run: {exc}") from None

    def save(self, best: bool = False) -> Path:
        """Write last.pt (and best.pt, the same bytes) from the current state (rank 0 only)."""
        if self.dist.is_main:
            self.folder.save(self.state(), best)
        return self.folder.last

    def write_run_files(self) -> None:
        """What a new run folder records besides checkpoints: the resolved spec, and the data's split and
        normalization (so that a resume and `netspec eval RUN` see the same split)."""
        if not self.dist.is_main:
            return
        self.folder.write_spec(self.spec.to_data())
        self.folder.write_data({**self.info.to_dict(), "notes": self.data.notes})
        self.folder.write_split(self.data.split)

    # -- the loop --

    def run(self, on_epoch: Callable[[EpochMetrics], None] | None = None) -> TrainResult:
        """Train to cfg.epochs (or until early stopping); `on_epoch` sees each epoch's metrics after they are
        saved (a sweep reports them to its pruner, which may stop the run by raising)."""
        cfg = self.cfg
        self.model.train()
        if self.epoch == 0 and self.batch == 0:
            self.save()  # a run folder always holds a loadable checkpoint
        if self.dist.is_main:
            # The checkpoint is the record: a kill between its rename and the metrics files' leaves those
            # one epoch behind, and a resume (even of a finished run) writes them again from it.
            self.folder.write_metrics([m.row(self.columns) for m in self.epochs], self.columns)
        self.board = _tensorboard(self.run_dir, self.epoch * len(self.train_loader) + self.batch) if (
            self.dist.is_main) else None  # fmt: skip
        try:
            with stop_requests() as stop:
                while self.epoch < cfg.epochs and not self.stopped_early:
                    self._train_epoch(stop)
                    metrics = self._finish_epoch()
                    self.report(_epoch_line(metrics, cfg.epochs, self.device, self.task))
                    if self.stopped_early:
                        self.report(
                            f"early stop: {cfg.monitor} has not improved for {cfg.patience} epochs; best.pt holds "
                            f"epoch {self.best_epoch}"
                        )
                    if on_epoch is not None:
                        on_epoch(metrics)
                if not self.epochs:
                    raise UsageError("nothing to train: the run has no epochs")
                if self.reported is None:  # resumed a finished run: nothing was evaluated in this call
                    self.reported = self._report_split_evaluation()
                if self.dist.is_main:
                    self._write_plots(self.reported)
        finally:
            if self.board is not None:
                self.board.close()
        if stop:  # a stop request while the last epoch was saved or the plots drawn: the run is whole; stop
            raise Interrupted(
                f"stopped by {signal.Signals(stop[0]).name} after the last epoch; the run is complete in "
                f"{self.run_dir}"
            )
        details = self.reported.details if self.reported is not None else {}
        return TrainResult(
            self.epochs, str(self.device), str(self.run_dir), details.get("confusion", []), list(self.info.classes),
            self.best_epoch, self.selected_on, self.stopped_early, self.task.name, details,
        )  # fmt: skip

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
        running = self._running_meter()
        if carried.sums or carried.correct:  # (`correct`: a classifier's checkpoint from before tasks)
            running.sums += torch.tensor(carried.sums or [carried.correct], dtype=torch.float64, device=self.device)
        seen = carried.seen
        start = time.perf_counter()
        bar = self._progress_bar()
        with bar:
            task = bar.add_task(
                f"epoch {self.epoch + 1}/{cfg.epochs}",
                total=len(loader),
                completed=self.batch,
                loss=None,
                speed=None,
            )
            for x, y, weight in self._batches():
                loss, logits = self.step(x, y, weight if self.dist.active else None)
                if weight:  # (0: a stand-in example for a rank the last short batch left nothing)
                    n = len(y)
                    loss_sum += loss.detach() * n if not self.dist.active else loss.detach() / weight
                    running.sums += self.task.batch_stats(logits.detach().float(), y, running)
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
                            f"stopped, the last good checkpoint is {self.folder.last}"
                        )
                    self.steps.append([self.epoch + self.batch / len(loader), value])
                    if self.batch % 10 == 0 and not bar.disable:
                        elapsed = p.seconds + time.perf_counter() - start
                        bar.update(task, completed=self.batch, loss=value, speed=seen / max(elapsed, 1e-9))
                elif self.dist.active:
                    stopping = False  # decided together at the next check
                if stopping:
                    self._close_partial(loss_sum, running.sums, seen, start)
                    path = self.save()
                    raise Interrupted(
                        f"interrupted at epoch {self.epoch + 1}, step {self.batch}; saved {path}. "
                        f"Resume with: netspec train --resume {self.run_dir}"
                    )
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._close_partial(loss_sum, running.sums, seen, start)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """(x, y, weight) of the current epoch from the current batch on; in a distributed run, this rank's
        share of each global batch."""
        if self.dist.active:
            return self.train_loader.shard_batches(self.epoch, self.batch)
        return ((x, y, 1.0) for x, y in self.train_loader.batches(self.epoch, self.batch))

    def _running_meter(self) -> Meter:
        """The training batches' running metric (a classifier's: the correct answers)."""
        return self.task.meter(self.info, self.cfg, self.device, full=False)

    def _close_partial(self, loss_sum: torch.Tensor, stats: torch.Tensor, seen: int, start: float) -> None:
        """Record the epoch's running sums (over all processes) in self.partial."""
        seconds = torch.tensor([self.partial.seconds + time.perf_counter() - start])
        counts = torch.tensor([seen], dtype=torch.long)
        sums = loss_sum.cpu()
        stats = stats.cpu()
        if self.dist.active:
            self.dist.sum_(sums, counts)
            self.dist.sum_(stats)
            self.dist.max_(seconds)
        self.partial.loss_sum, self.partial.sums, self.partial.correct = sums.item(), stats.tolist(), 0
        self.partial.seen, self.partial.seconds = int(counts.item()), float(seconds.item())

    def _evaluate(self, loader: DeviceLoader) -> Evaluation:
        meter = self.task.meter(self.info, self.cfg, loader.device)
        return evaluate(self._evaluated, loader, meter, self.cfg.amp, self.dist)

    def _report_split_evaluation(self) -> Evaluation | None:
        """The evaluation of the split the run reports on: test, or validation without a test split."""
        loader = self.test_loader or self.val_loader
        return self._evaluate(loader) if loader is not None else None

    def _finish_epoch(self) -> EpochMetrics:
        p = self.partial
        val = self._evaluate(self.val_loader) if self.val_loader else None
        test = self._evaluate(self.test_loader) if self.test_loader else None
        self.reported = test or val
        running = self.task.summarize(torch.tensor(p.sums or [p.correct], dtype=torch.float64), max(p.seen, 1),
                                      self._running_meter()) if p.seen else {}  # fmt: skip
        metrics = EpochMetrics(
            epoch=self.epoch + 1,
            train_loss=p.loss_sum / max(p.seen, 1),
            train_accuracy=None,
            examples_per_sec=p.seen / max(p.seconds, 1e-9),
            lr=self.optimizer.param_groups[0]["lr"],
            seconds=p.seconds,
            examples=p.seen,
        )
        for split, figures in (("train", running), ("val", val.metrics if val else {}), ("test", test.metrics if test else {})):
            for name in self.task.metric_names:
                metrics.set(f"{split}_{name}", figures.get(name))
        metrics.val_loss, metrics.test_loss = (val.loss if val else None), (test.loss if test else None)
        self.epochs.append(metrics)
        self.epoch += 1
        self.batch = 0
        self.partial = _Progress()
        # best.pt: the best selection score (validation; test only when there is no validation split).
        chosen = None if self.selected_on == "last_epoch" else metrics.get(self.selected_on)
        score = None if chosen is None else (-chosen if self.task.lower_is_better(self.selection_metric) else chosen)
        improved = self.selected_on == "last_epoch" or (score is not None and score > self.best_accuracy)
        if improved:
            self.best_accuracy, self.best_epoch = (score if score is not None else self.best_accuracy), metrics.epoch
        self._early_stopping(metrics)
        self.save(best=improved)
        if self.dist.is_main:
            self.folder.write_metrics([m.row(self.columns) for m in self.epochs], self.columns)
            _log_epoch(self.board, metrics, self.steps, self.epoch * len(self.train_loader), self.columns)
        return metrics

    def _early_stopping(self, metrics: EpochMetrics) -> None:
        """Count the epochs since cfg.monitor last improved; stop after cfg.patience of them."""
        if self.cfg.patience is None:
            return
        monitor = self.cfg.monitor if self.val_loader is not None else self.cfg.monitor.replace("val_", "test_")
        value = metrics.get(monitor)
        if value is None:
            return
        lower = self.task.lower_is_better(monitor.split("_", 1)[1])
        if self.best is None or (value < self.best if lower else value > self.best):
            self.best, self.stale_epochs = value, 0
        else:
            self.stale_epochs += 1
            self.stopped_early = self.stale_epochs >= self.cfg.patience

    @property
    def _evaluated(self) -> nn.Module:
        # Evaluation runs on each rank's own share without DDP, whose forward would expect every rank
        # to make the same number of calls.
        return self.model if self.dist.active else self.forward

    def _write_plots(self, evaluation: Evaluation | None) -> None:
        title = f"{self.spec.name} on {self.info.name}"
        plot_curves(self.folder.curves, self.epochs, title, self.steps, self.task.shown[0])
        split = "test" if self.test_loader is not None else "validation"
        picture = self.folder.path / self.task.picture_name()
        self.task.draw(picture, evaluation, list(self.info.classes), f"{title} ({split})")

    def _progress_bar(self) -> Any:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _LossColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not (self.show_progress and console.is_terminal),
        )


class _LossColumn:
    """The progress bar's loss and speed, blank until the first value is known (never 'loss nan 0 ex/s')."""

    def __new__(cls) -> Any:
        from rich.progress import ProgressColumn
        from rich.text import Text

        class Column(ProgressColumn):
            def render(self, task: Any) -> Text:
                loss, speed = task.fields.get("loss"), task.fields.get("speed")
                if loss is None or speed is None:
                    return Text("")
                return Text(f"loss {loss:.3f}  {speed:,.0f} ex/s")

        return Column()


def _epoch_line(m: EpochMetrics, epochs: int, device: torch.device, task: Task) -> str:
    parts = [f"loss {m.train_loss:.3f}"]
    for split in ("train", "val", "test"):
        for metric, label in task.shown:
            value = m.get(f"{split}_{metric}")
            if value is not None:
                parts.append(f"{split} {label} {value:.3f}")
    return f"epoch {m.epoch}/{epochs}: {', '.join(parts)}, {m.examples_per_sec:.1f} examples/sec on {device}"


def _tensorboard(run_dir: Path, step: int) -> Any:
    """A SummaryWriter into the run folder (`tensorboard --logdir runs` shows every run), or None without the
    tensorboard package. `purge_step` drops what an interrupted run logged past its last checkpoint."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir), purge_step=step if step else None)


def _log_epoch(board: Any, m: EpochMetrics, steps: list[list[float]], step: int, columns: tuple[str, ...]) -> None:
    if board is None:
        return
    for name in (*(c for c in columns if c.startswith(("train_", "val_", "test_"))), "lr"):
        value = m.get(name)
        if value is not None:
            board.add_scalar(name.replace("_", "/", 1), value, m.epoch)
    per_epoch = [s for s in steps if m.epoch - 1 <= s[0] <= m.epoch]
    for at, loss in per_epoch:
        board.add_scalar("train/step_loss", loss, round(at * step / max(m.epoch, 1)))
    board.flush()


# --- data --------------------------------------------------------------------------------------


def load_data(net: NetShape, cfg: TrainConfig, recorded: dict[str, list[int]] | None = None) -> Data:
    """The run's data, refused before any work if the spec cannot take its inputs or give its classes."""
    wanted = tuple(net.input_shape)
    if cfg.data is None:
        from netspec.data import dataset_info

        known = dataset_info(cfg.dataset, wanted).sample_shape
        same_channels = len(wanted) == len(known) == 3 and wanted[0] == known[0]
        if wanted != known and not (cfg.resize and same_channels):
            hint = (
                " (add --resize, or resize: true in the train section, to resize them on the fly)"
                if same_channels
                else ""
            )
            raise UsageError(
                f"spec {net.spec.name} takes input {format_shape(wanted)} but dataset {cfg.dataset} "
                f"has images of {format_shape(known)}{hint}"
            )
    # (resize is for the built-in datasets: a spec's `resize: true` leaves --data alone, whose images are resized
    # to the spec's input as they are read)
    data = open_data(cfg, wanted, recorded)
    info = data.info
    where = net.spec.source.file or f"spec {net.spec.name}"
    if info.kind == "table" and wanted != info.sample_shape:
        raise UsageError(
            f"{where}: the network takes input {format_shape(wanted)} but {info.name} has {info.sample_shape[0]} "
            f"feature columns (set input: [{info.sample_shape[0]}])"
        )
    augment = Augment.of(cfg.augment)
    if augment is not None and (info.kind != "image" or len(wanted) != 3):
        raise UsageError(
            f"augment: crop, flip and cutout apply to images (C×H×W); {info.name} gives "
            f"{'table rows' if info.kind == 'table' else format_shape(wanted)}: remove augment from the train section"
        )
    check_fits(net, info, task_of(cfg))
    return data


def check_fits(net: NetShape, info: DataInfo, task: Task | None = None) -> None:
    """The network's output fits the task and the data (a classifier: one score per class): say so, with the
    fix, before anything runs."""
    where = net.spec.source.file or f"spec {net.spec.name}"

    def fix(n: int) -> str:
        last = next((r for r in reversed(rows_of(net.root)) if r.kind in ("linear", "conv2d")), None)
        arg = "out_features" if last is None or last.kind == "linear" else "out_channels"
        return f"set the last {last.kind if last else 'linear'}'s {arg} to {n}"

    (task or task_of(TrainConfig())).check_output(tuple(net.output_shape), info, where, fix)


def make_loader(
    spec: Spec,
    cfg: TrainConfig,
    data: Data,
    part: Examples,
    device: torch.device,
    train: bool,
    dist: Dist = ONE_PROCESS,
) -> DeviceLoader:
    """A split on `device`: the training split shuffled (and augmented), the others in order."""
    info = data.info
    batch_size = cfg.batch_size if train else cfg.test_batch_size
    resize = cfg.resize and cfg.data is None and tuple(spec.input) != info.sample_shape
    return DeviceLoader(
        part,
        info,
        batch_size,
        device,
        shuffle=train,
        augment=Augment.of(cfg.augment) if train else None,
        seed=cfg.seed,
        channels_last=cfg.channels_last,
        resize_to=tuple(spec.input[1:]) if resize else None,
        shard=(dist.rank, dist.world),
    )


# --- the entry points --------------------------------------------------------------------------


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
    overwrite: bool = False,
) -> TrainResult:
    """Train a spec (or resume a run folder) and return its metrics.

    `overrides` replace fields of the spec's train section (e.g. {"epochs": 3}); with `resume`, only
    {"epochs": N} is allowed, to extend a finished or interrupted run. An `out` that already holds a run is
    refused unless `overwrite` (see netspec.runfolder). Started by torchrun (or `netspec train
    --nproc-per-node N`), each process trains its share and rank 0 writes the run folder; see
    netspec.distributed.
    """
    if resume is not None:
        return _resume(Path(resume), report, progress, on_epoch, backend, sync_bn, (overrides or {}).get("epochs"))
    if spec is None:
        raise UsageError("give a spec to train, or --resume RUN_DIR")
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    cfg = resolve_config(spec, overrides)
    spec = spec.model_copy(update={"train": cfg})
    dist, device = distributed.from_environment(resolve_device(cfg.device), backend)
    run_dir = new_run_dir(spec.name, out)
    if dist.is_main:  # before the data is read: an --out that holds a run is refused at once
        runfolder.check_new(run_dir, "run", overwrite=overwrite)
    run_dir = Path(dist.from_main(str(run_dir)))  # rank 0's (a new folder's name has the time in it)
    trainer = Trainer(spec, cfg, run_dir, report, progress, dist, device, sync_bn)
    claim = runfolder.claim(run_dir, "run", overwrite=overwrite) if dist.is_main else None
    try:
        trainer.write_run_files()
        trainer.report(trainer.describe())
        if trainer.start_note:
            trainer.report(trainer.start_note)
        return trainer.run(on_epoch)
    finally:
        if claim:
            claim.release()


def _resume(
    run_dir: Path,
    report: Reporter,
    progress: bool,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    backend: str | None = None,
    sync_bn: bool | None = None,
    epochs: int | None = None,
) -> TrainResult:
    if not run_dir.is_dir():
        raise UsageError(f"--resume {run_dir}: no such run folder")
    folder = RunDir(run_dir)
    if not folder.last.exists():
        raise CheckpointError(
            f"--resume {run_dir}: the run folder holds no checkpoint ({folder.last.name}); start the run again"
        )
    ckpt = folder.load_last()
    try:
        spec = validate_spec(ckpt["spec"])
        cfg = TrainConfig.model_validate(ckpt["train_config"])
    except (KeyError, ValidationError) as exc:
        raise CheckpointError(f"{folder.last}: its spec or settings are unreadable ({exc})") from None
    if epochs is not None and epochs != cfg.epochs:
        if epochs < int(ckpt.get("epoch", 0)):
            raise UsageError(f"--epochs {epochs}: the run has already trained {ckpt['epoch']} epochs")
        if cfg.scheduler in ("cosine", "onecycle"):
            raise UsageError(
                f"--epochs {epochs}: this run's {cfg.scheduler} schedule was planned for {cfg.epochs} epochs and "
                f"cannot be stretched; start a new run from it with --init-from {folder.best}"
            )
        cfg = cfg.model_copy(update={"epochs": epochs})
        spec = spec.model_copy(update={"train": cfg})
        (ckpt.get("selection") or {})["stopped_early"] = False
    dist, device = distributed.from_environment(resolve_device(cfg.device), backend)
    claim = runfolder.claim(run_dir, "run", existing=True) if dist.is_main else None
    try:
        if dist.is_main:
            for stale in run_dir.glob(".*.tmp"):  # left by a write that a kill interrupted
                stale.unlink(missing_ok=True)
        try:
            trainer = Trainer(
                spec, cfg, run_dir, report, progress, dist, device, sync_bn, folder.read_split(), resume_from=ckpt
            )
        except DataError as exc:
            raise type(exc)(f"--resume {run_dir}: {exc}") from None  # same class: same exit code
        if epochs is not None and dist.is_main:
            folder.write_spec(spec.to_data())
        if trainer.epoch >= cfg.epochs or trainer.stopped_early:
            report(f"{run_dir} already finished its {trainer.epoch} epochs")
        return trainer.run(on_epoch)
    finally:
        if claim:
            claim.release()
