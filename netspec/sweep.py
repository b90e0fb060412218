"""`netspec sweep`: hyper-parameter and architecture sweeps, on Optuna.

Each trial is an ordinary `netspec train` run folder under DIR/trials/, so `netspec eval`
and `--resume` work on any of them. Optuna does the rest: its samplers (grid, TPE,
random) choose the settings, a trial is pruned when its per-epoch validation accuracy falls below the median of the finished trials of
its own architecture (prune_reason; never the test split's: test accuracy is only reported), and its RDB
storage (an SQLite file in DIR, or any URL given with --storage) holds the study, so that a sweep resumes after a kill and several processes
or machines can work on one study at once (netspec.storage). A worker that dies is noticed
by Optuna's heartbeat; its trial is retried by another worker and continues from the
trial's last checkpoint. With --nproc-per-node N each trial is a torch.distributed job,
launched as `netspec train --nproc-per-node N` launches one (netspec.distributed).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import TypeAdapter, ValidationError

from netspec import plots, runfolder
from netspec.config import Sampler, SweepConfig, TrainConfig, choices
from netspec.distributed import TrainingJob
from netspec.errors import Interrupted, NetspecError, SpecError, UsageError
from netspec.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir
from netspec.metrics import EpochMetrics, TrainResult
from netspec.runfolder import RunDir
from netspec.shapes import infer_shapes
from netspec.spec import Spec, closest, load_spec
from netspec.spec import parse_value as spec_value
from netspec.storage import GRACE_ENV, HEARTBEAT_ENV, MAX_RETRIES, StorageLost, open_storage, setting
from netspec.storage import quiet_optuna as _optuna
from netspec.tasks import task_of
from netspec.train import (
    load_data,
    resolve_config,
    stop_requests,
    train,
)

Reporter = Callable[[str], None]
SPEC_KEY = "spec"  # the dimension that chooses among several specs
STUDY_DB = "study.db"
PRUNE_AFTER = 2  # finished trials of an architecture before its other trials can be pruned


class TrialFailed(NetspecError):
    """A trial that failed (diverged, out of memory, an error): recorded, and the sweep goes on."""


# --- the search space ------------------------------------------------------------------------------


@dataclass
class Dimension:
    """One swept key: a list of values, or a range (for the tpe and random samplers)."""

    key: str
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.values is None

    def suggest(self, trial: Any) -> Any:
        if self.values is not None:
            return trial.suggest_categorical(self.key, self.values)
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, False) or k == "key"}


_RANGE = re.compile(r"^\s*([^.\s][^\s]*?)\s*\.\.\s*([^\s:]+)\s*(?::\s*(log))?\s*$")


def parse_dimension(key: str, value: Any) -> Dimension:
    """`0.1,0.01` (or a YAML list) is categorical; `1e-4..1e-1:log` and `16..128` are ranges."""
    if isinstance(value, list):
        return Dimension(key, values=list(value))
    text = str(value)

    def parse_value(part: str) -> Any:
        try:
            return spec_value(part)
        except ValueError as exc:  # nan, inf, `[1,`
            raise UsageError(f"--grid {key}={text}: {exc}") from None

    match = _RANGE.match(text)
    if match:
        low, high = (parse_value(match.group(i)) for i in (1, 2))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise UsageError(f"--grid {key}={text}: a range needs numbers at both ends, like 1e-4..1e-1:log")
        if low >= high:
            raise UsageError(f"--grid {key}={text}: the range is empty ({low} is not below {high})")
        if match.group(3) and low <= 0:
            raise UsageError(f"--grid {key}={text}: a log range needs positive ends")
        integer = isinstance(low, int) and isinstance(high, int)
        return Dimension(key, low=low, high=high, log=bool(match.group(3)), integer=integer)
    values = [parse_value(part) for part in text.split(",") if part.strip()]
    if not values:
        raise UsageError(f"--grid {key}=: give values (a,b,c) or a range (low..high)")
    return Dimension(key, values=values)


def parse_grid_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--grid {text}: write KEY=V1,V2,... or KEY=LOW..HIGH[:log]")
    return key.strip(), value


# --- the plan: specs, dimensions and settings, all checked before any trial ------------------------


@dataclass
class SweepPlan:
    specs: dict[str, Path]  # name -> file
    dimensions: list[Dimension]
    sampler: str = "grid"
    trials: int | None = None
    epochs: int | None = None
    prune: bool = True
    seed: int = 0
    storage: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)  # --set, for every trial
    nproc_per_node: int | None = None  # each trial a torchrun job of this many processes (None: in-process)

    def to_dict(self) -> dict[str, Any]:
        return {
            "specs": {name: str(path) for name, path in self.specs.items()},
            "dimensions": [d.to_dict() for d in self.dimensions],
            "sampler": self.sampler,
            "trials": self.trials,
            "epochs": self.epochs,
            "prune": self.prune,
            "seed": self.seed,
            "storage": self.storage,
            "train_overrides": self.train_overrides,
            "variables": self.variables,
            "nproc_per_node": self.nproc_per_node,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPlan:
        return cls(
            specs={name: Path(path) for name, path in data["specs"].items()},
            dimensions=[Dimension(**d) for d in data["dimensions"]],
            **{k: data[k] for k in ("sampler", "trials", "epochs", "prune", "seed", "storage")},
            train_overrides=data["train_overrides"],
            variables=data["variables"],
            nproc_per_node=data.get("nproc_per_node"),
        )

    @property
    def study_name(self) -> str:
        """The same for every worker given the same sweep, so that they share one study (where and how the
        trials run, --storage and --nproc-per-node, may differ between workers)."""
        what = {k: v for k, v in self.to_dict().items() if k != "nproc_per_node"} | {"storage": None}
        digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
        return f"{'+'.join(self.specs)}-{digest.hexdigest()[:10]}"

    def grid_size(self) -> int:
        return math.prod(len(d.values or []) for d in self.dimensions)

    def split(self, params: dict[str, Any]) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        """A trial's spec file, its spec variables and its train overrides."""
        spec_path = self.specs[params.get(SPEC_KEY, next(iter(self.specs)))]
        train_fields = {k: v for k, v in params.items() if k in TrainConfig.model_fields}
        variables = {k: v for k, v in params.items() if k != SPEC_KEY and k not in TrainConfig.model_fields}
        overrides = {**self.train_overrides, **({"epochs": self.epochs} if self.epochs else {}), **train_fields}
        return spec_path, {**self.variables, **variables}, overrides


def make_plan(
    spec_paths: list[str | Path],
    grid: list[str] | dict[str, Any],
    *,
    sampler: str | None = None,
    trials: int | None = None,
    epochs: int | None = None,
    prune: bool | None = None,
    seed: int | None = None,
    storage: str | None = None,
    train_overrides: dict[str, Any] | None = None,
    variables: dict[str, Any] | None = None,
    nproc_per_node: int | None = None,
) -> SweepPlan:
    """Read the specs and check every setting every trial will use; raise before any trial runs."""
    if not spec_paths:
        raise UsageError("give at least one spec to sweep")
    specs: dict[str, Path] = {}
    loaded: dict[str, Spec] = {}
    for path in spec_paths:
        spec = load_spec(path, variables=variables or {})
        if spec.name in specs:
            raise UsageError(f"{path}: two specs are named {spec.name}; names tell the trials apart")
        specs[spec.name], loaded[spec.name] = Path(path).resolve(), spec
    # A spec's own `sweep:` section gives defaults; the command line wins.
    section = next((s.sweep for s in loaded.values() if s.sweep is not None), None) or SweepConfig()
    items = list(grid.items()) if isinstance(grid, dict) else [parse_grid_option(g) for g in grid]
    if not items:
        items = list(section.grid.items())
    plan = SweepPlan(
        specs=specs,
        dimensions=[parse_dimension(k, v) for k, v in items],
        sampler=sampler or section.sampler,
        trials=trials if trials is not None else section.trials,
        epochs=epochs if epochs is not None else section.epochs,
        prune=prune if prune is not None else section.prune,
        seed=seed if seed is not None else section.seed,
        storage=storage or section.storage,
        train_overrides=dict(train_overrides or {}),
        variables=dict(variables or {}),
        nproc_per_node=nproc_per_node,
    )
    if len(specs) > 1:
        plan.dimensions.insert(0, Dimension(SPEC_KEY, values=list(specs)))
    _check_plan(plan, loaded)
    return plan


def _check_plan(plan: SweepPlan, loaded: dict[str, Spec]) -> None:
    keys = [d.key for d in plan.dimensions]
    if not keys:
        raise UsageError("nothing to sweep: give --grid KEY=V1,V2,... (or several specs)")
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise UsageError(f"--grid {sorted(dupes)[0]} is given twice")
    variables = sorted({v for spec in loaded.values() for v in spec.vars})
    known = [*TrainConfig.model_fields, *variables]
    for dim in plan.dimensions:
        if dim.key == SPEC_KEY:
            continue
        if dim.key not in known:
            suggestion = closest(dim.key, known)
            hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
            where = f"; the specs' vars: {', '.join(variables)}" if variables else "; the specs declare no vars"
            raise UsageError(f"--grid {dim.key}: not a train setting nor a spec variable{hint}{where}")
        if dim.key in TrainConfig.model_fields:
            info = TrainConfig.model_fields[dim.key]
            # The field's own type and constraints (pydantic keeps Gt/Ge and the like in its metadata).
            adapter = TypeAdapter(Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)
            for value in dim.values if dim.values is not None else [dim.low, dim.high]:
                try:
                    adapter.validate_python(value)
                except ValidationError as exc:
                    raise UsageError(f"--grid {dim.key}={value!r}: {exc.errors()[0]['msg'].lower()}") from None
    if plan.sampler not in choices(Sampler):
        *others, last = choices(Sampler)
        raise UsageError(f"--sampler {plan.sampler}: choose {', '.join(others)} or {last}")
    ranges = [d.key for d in plan.dimensions if d.is_range]
    if plan.sampler == "grid" and ranges:
        raise UsageError(f"--grid {ranges[0]} is a range; ranges need --sampler tpe or random with --trials N")
    if plan.sampler != "grid" and not plan.trials:
        raise UsageError(f"--sampler {plan.sampler} needs --trials N")
    # Every combination the sweep can reach builds and has valid settings (ranges: both ends).
    combos = [{}]
    for dim in plan.dimensions:
        options = dim.values if dim.values is not None else [dim.low, dim.high]
        combos = [{**c, dim.key: v} for c in combos for v in options]
    seen: set[str] = set()
    fitted: set[str] = set()
    for params in combos[:2000]:
        spec_path, variables, overrides = plan.split(params)
        key = json.dumps([str(spec_path), variables], sort_keys=True, default=str)
        try:
            if key not in seen:
                seen.add(key)
                infer_shapes(load_spec(spec_path, variables=variables))
            cfg = resolve_config(loaded[_spec_name(plan, spec_path)], overrides)
            # The network must fit its data (input and classes) in every trial: refused now, not in trial 7.
            data_key = json.dumps([key, cfg.data, cfg.dataset, cfg.label, cfg.resize], default=str)
            if data_key not in fitted:
                fitted.add(data_key)
                load_data(infer_shapes(load_spec(spec_path, variables=variables)), cfg)
        except SpecError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            raise SpecError(
                f"{exc.message} (with {shown})", file=exc.file, line=exc.line, column=exc.column, where=exc.where
            ) from None
        workers = plan.nproc_per_node
        if workers and cfg.batch_size % workers:
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            raise UsageError(
                f"--nproc-per-node {workers}: batch size {cfg.batch_size} (with {shown}) does not divide among "
                f"{workers} processes; the batch size is the global batch, so give one divisible by {workers}"
            )


def _spec_name(plan: SweepPlan, path: Path) -> str:
    return next(name for name, p in plan.specs.items() if p == path)


# --- running -------------------------------------------------------------------------------------


def _label(params: dict[str, Any]) -> str:
    def short(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ",".join(f"{k}={short(v)}" for k, v in params.items())


def _folder_name(number: int, params: dict[str, Any]) -> str:
    return f"{number:04d}-" + re.sub(r"[^A-Za-z0-9=,._+-]", "_", _label(params))[:120]


def _retry_callback() -> Any:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


def _retried_numbers(trials: list[Any]) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _recover(study: Any, report: Reporter) -> None:
    """After a kill or Ctrl-C: retry the trials that never finished (they resume from their checkpoint)."""
    from optuna.trial import TrialState

    retry = _retry_callback()
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    for t in trials:
        interrupted = t.state == TrialState.FAIL and t.user_attrs.get("interrupted")
        if t.number in retried or not (t.state == TrialState.RUNNING or interrupted):
            continue
        if t.state == TrialState.RUNNING:  # its process is gone: this folder's sweep was stopped
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        retry(study, study._storage.get_trial(t._trial_id))
        report(f"trial {t.number} ({_label(t.params)}) did not finish; it continues from its last checkpoint")


def prune_reason(trial: Any, epoch: int) -> str | None:
    """Why `trial` should stop after `epoch`, or None: its validation accuracy is below the median of the
    finished trials of the same architecture (spec and variables) at that epoch, and at least PRUNE_AFTER of
    those exist.
    Comparing only within an architecture keeps a slow-starting network from being cut against another."""
    from optuna.trial import TrialState

    frozen = trial.study._storage.get_trial(trial._trial_id)
    value = frozen.intermediate_values.get(epoch)
    architecture = frozen.user_attrs.get("architecture")
    peers = [
        t.intermediate_values[epoch]
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("architecture") == architecture and epoch in t.intermediate_values
    ]
    if value is None or len(peers) < PRUNE_AFTER:
        return None
    median = statistics.median(peers)
    if value >= median:
        return None
    # (the values are scores, higher better: a metric where lower is better, such as a loss, is negated)
    sign = -1 if frozen.user_attrs.get("lower_is_better") else 1
    below = "above" if sign < 0 else "below"
    return (
        f"validation {_metric_words(frozen.user_attrs)} {sign * value:.3f} after epoch {epoch} is {below} the median "
        f"{sign * median:.3f} of the {len(peers)} finished trials of {architecture} at that epoch"
    )


class _Sweeper:
    def __init__(self, plan: SweepPlan, out: Path, report: Reporter) -> None:
        self.plan, self.out, self.report = plan, out, report
        self.abandoned: int | None = None  # a trial another worker took over from this one
        # SIGINT/SIGTERM received outside a trial's training (which stops itself): the sweep stops between trials.
        self.stop: list[int] = []

    def study(self, storage: Any, resume: bool) -> Any:
        optuna = _optuna()
        plan = self.plan
        if plan.sampler == "grid":
            space = {d.key: d.values for d in plan.dimensions}
            sampler: Any = optuna.samplers.GridSampler(space, seed=plan.seed)  # type: ignore[arg-type]
        elif plan.sampler == "tpe":
            sampler = optuna.samplers.TPESampler(seed=plan.seed)
        else:
            sampler = optuna.samplers.RandomSampler(seed=plan.seed)
        # Pruning is decided in `objective` (prune_reason), among trials of the same architecture only.
        study = optuna.create_study(
            study_name=plan.study_name,
            storage=storage,
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
            direction="maximize",
            load_if_exists=True,
        )
        if plan.prune:
            self.report(
                f"pruning: a trial stops early when its validation score (accuracy, or its task's metric) falls behind the median of the finished "
                f"trials of the same architecture (spec and variables) at that epoch, once {PRUNE_AFTER} of them have finished; --no-prune runs "
                "every trial to the end"
            )
        if resume and plan.storage is None:  # a shared storage's stale trials are found by the heartbeat
            _recover(study, self.report)
        return study

    def objective(self, trial: Any) -> float:
        import optuna

        plan = self.plan
        params = {d.key: d.suggest(trial) for d in plan.dimensions}
        if self.stop:  # asked to stop while this trial was being set up: it waits for --resume
            trial.set_user_attr("interrupted", True)
            raise Interrupted("stopped before the trial started")
        if self._is_duplicate(trial):
            trial.set_user_attr("duplicate", True)
            raise optuna.TrialPruned("another worker runs this grid point")
        spec_path, variables, overrides = plan.split(params)
        run_dir = Path(trial.user_attrs.get("run_dir") or self.out / "trials" / _folder_name(trial.number, params))
        trial.set_user_attr("run_dir", str(run_dir))
        resume = RunDir(run_dir).last.exists()
        label = _label(params)
        self.report(f"trial {trial.number}: {label}" + (" (resumed)" if resume else ""))

        def on_epoch(metrics: Any) -> None:
            trial.set_user_attr(f"train_{metric}", metrics.get(f"train_{metric}"))
            trial.set_user_attr("train_loss", metrics.train_loss)
            trial.set_user_attr("examples_per_sec", metrics.examples_per_sec)
            trial.set_user_attr(f"val_{metric}", metrics.get(f"val_{metric}"))
            trial.set_user_attr(f"test_{metric}", metrics.get(f"test_{metric}"))
            trial.set_user_attr("epochs_run", metrics.epoch)
            trial.report(_as_score(selection_accuracy(metrics.get(f"val_{metric}"), metrics.get(f"test_{metric}")),
                                   lower), metrics.epoch)  # fmt: skip
            # Pruning saves the epochs still to come; a trial at its last epoch has finished anyway.
            if plan.prune and metrics.epoch < total_epochs:
                reason = prune_reason(trial, metrics.epoch)
                if reason:
                    raise optuna.TrialPruned(reason)

        # What the trial is chosen on: its task's selection metric (a classifier's validation accuracy; the
        # monitor's for the other tasks), as a score where higher is better (a loss is negated).
        metric, lower = "accuracy", False
        try:
            spec = load_spec(spec_path, variables=variables)
            cfg = resolve_config(spec, overrides)
            total_epochs = cfg.epochs
            task = task_of(cfg)
            metric = task.selection_metric(cfg)
            lower = task.lower_is_better(metric)
            trial.set_user_attr("metric", metric)
            trial.set_user_attr("lower_is_better", lower)
            trial.set_user_attr("spec", spec.name)
            trial.set_user_attr("architecture", spec.name + (f" ({_label(variables)})" if variables else ""))
            trial.set_user_attr("params", infer_shapes(spec).total_params)
            result = self._train(spec, overrides, run_dir, resume, on_epoch)
        except (StorageLost, optuna.exceptions.UpdateFinishedTrialError) as exc:
            if not isinstance(exc, StorageLost):
                self.abandoned = trial.number
                self.report(
                    f"  trial {trial.number}: another worker took it over (this worker's heartbeats were late, "
                    "e.g. while the database was unreachable); this worker leaves it"
                )
            raise
        except (optuna.TrialPruned, Interrupted, KeyboardInterrupt) as exc:
            if isinstance(exc, optuna.TrialPruned):
                self.report(f"  trial {trial.number} pruned: {exc} (--no-prune to run every trial to the end)")
            else:  # --resume continues it from its last checkpoint (a finished one just reports)
                trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:  # recorded with its message; the sweep goes on
            message = str(exc) if isinstance(exc, NetspecError) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", message.splitlines()[0][:500])
            self.report(f"  trial {trial.number} failed: {message.splitlines()[0]}")
            raise TrialFailed(message) from None
        # The trial's value is its best.pt's validation accuracy; the test accuracy beside it is that same
        # model's, for the report only.
        best_val, best_test = result.best.get(f"val_{metric}"), result.best.get(f"test_{metric}")
        trial.set_user_attr(f"val_{metric}", best_val)
        trial.set_user_attr(f"test_{metric}", best_test)
        trial.set_user_attr("selected_on", result.selected_on)
        return _as_score(selection_accuracy(best_val, best_test), lower)

    def _train(
        self, spec: Spec, overrides: dict[str, Any], run_dir: Path, resume: bool, on_epoch: Callable[[Any], None]
    ) -> TrainResult:
        """Train the trial in this process, or (--nproc-per-node N) as a torchrun job of N processes."""

        def report(line: str) -> None:
            self.report(f"  {line}")

        if self.plan.nproc_per_node is None:
            return train(
                None if resume else spec,
                None if resume else overrides,
                out=None if resume else run_dir,
                resume=run_dir if resume else None,
                report=report,
                progress=False,
                on_epoch=on_epoch,
                overwrite=True,  # the trial's own folder: what a stopped trial left before its first checkpoint
            )
        if resume:
            args = ["train", "--resume", str(run_dir)]
        else:
            # The trial's own spec, its variables resolved and its train section complete: the job needs no
            # other setting (the run folder will hold the same spec.yaml).
            cfg = resolve_config(spec, overrides)
            spec_file = ensure_writable_dir(run_dir.parent) / f"{run_dir.name}.yaml"  # beside the run folder
            atomic_write_text(
                spec_file, yaml.safe_dump(spec.model_copy(update={"train": cfg}).to_data(), sort_keys=False)
            )
            args = ["train", str(spec_file), "--out", str(run_dir), "--overwrite"]
        job = TrainingJob([*args, "--no-progress"], {"nproc_per_node": self.plan.nproc_per_node}, report)
        epochs = job.follow(run_dir, lambda row: on_epoch(EpochMetrics.from_row(row)))
        return TrainResult([EpochMetrics.from_row(row) for row in epochs], "distributed", str(run_dir))

    def _is_duplicate(self, trial: Any) -> bool:
        """GridSampler may hand a grid point that another worker is running to a late trial (a race between
        workers sharing one storage); the trial with the lower number keeps it."""
        from optuna.trial import TrialState

        system_attrs = trial.study._storage.get_trial(trial._trial_id).system_attrs
        if self.plan.sampler != "grid" or "failed_trial" in system_attrs:
            return False
        grid_id = system_attrs.get("grid_id")
        if grid_id is None:
            return False
        for other in trial.study.get_trials(deepcopy=False):
            if (
                other.number < trial.number
                and other.system_attrs.get("grid_id") == grid_id
                and other.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
            ):
                return True
        return False

    def run(self, study: Any) -> None:
        while True:
            self.abandoned = None
            try:
                study.optimize(self.objective, catch=(TrialFailed,), callbacks=[self._after_trial], gc_after_trial=True)
                return
            except ValueError:  # Optuna cannot record a trial another worker took over: go on with the next
                if self.abandoned is None:
                    raise

    def _after_trial(self, study: Any, trial: Any) -> None:
        """Go on while the sweep has trials to start. At the end of a shared sweep, wait for the trials that
        other workers run, so that a trial whose worker dies is taken over (Optuna's heartbeat) and every
        worker ends with the whole table."""
        import optuna
        from optuna.trial import TrialState

        announced = False
        while True:
            if self.stop:
                study.stop()
                return
            trials = study.get_trials(deepcopy=False)
            if any(t.state == TrialState.WAITING for t in trials) or not self._all_started(trials):
                return
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            if not running or self.plan.storage is None:
                study.stop()
                return
            if not announced:
                grace = setting(GRACE_ENV)
                self.report(
                    f"waiting for trial{'s' if len(running) > 1 else ''} {', '.join(map(str, running))} on other "
                    f"workers; a trial whose worker dies is taken over here after {grace} s without a heartbeat"
                )
                announced = True
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial becomes a waiting retry
            time.sleep(min(setting(HEARTBEAT_ENV), 5))

    def _all_started(self, trials: list[Any]) -> bool:
        """Every grid point (or --trials trials) is finished or being run by some worker."""
        from optuna.trial import TrialState

        if self.plan.sampler == "grid":
            active = (TrialState.RUNNING, TrialState.WAITING, *[s for s in TrialState if s.is_finished()])
            started = {t.system_attrs.get("grid_id") for t in trials if t.state in active}
            return started >= set(range(self.plan.grid_size()))
        retried = _retried_numbers(trials)
        counted = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return len([t for t in trials if t.state in counted and t.number not in retried]) >= (self.plan.trials or 1)


# --- results ---------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    sweep_dir: Path
    keys: list[str]
    trials: list[dict[str, Any]]
    files: list[str] = field(default_factory=list)  # what write_results and write_optuna_plots wrote

    @property
    def best(self) -> dict[str, Any] | None:
        done = [t for t in self.trials if t["state"] == "complete" and _score(t) is not None]
        return max(done, key=_score) if done else None

    def to_dict(self) -> dict[str, Any]:
        return {"sweep_dir": str(self.sweep_dir), "best": self.best, "trials": self.trials}


def collect(study: Any, plan: SweepPlan, out: Path) -> SweepResult:
    """One row per trial that ran (retried trials count once, as their last attempt), best first."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    rows = []
    for t in trials:
        if t.number in retried or t.user_attrs.get("duplicate") or not t.params:
            continue
        attrs = t.user_attrs
        metric = attrs.get("metric", "accuracy")
        chosen_on = {"metric": metric, "lower_is_better": bool(attrs.get("lower_is_better"))}
        spec_path, _, _ = plan.split(t.params)
        rows.append(
            {
                "number": t.number,
                "spec": attrs.get("spec", _spec_name(plan, spec_path)),
                "overrides": {k: v for k, v in t.params.items() if k != SPEC_KEY},
                "state": t.state.name.lower(),
                **{f"{split}_{metric}": attrs.get(f"{split}_{metric}") for split in ("val", "test", "train")},
                **(chosen_on if metric != "accuracy" else {}),  # (a classifier's rows are as they were)
                "train_loss": attrs.get("train_loss"),
                "examples_per_sec": attrs.get("examples_per_sec"),
                "params": attrs.get("params"),
                "epochs_run": attrs.get("epochs_run", 0),
                "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
                "run_dir": attrs.get("run_dir"),
                "error": attrs.get("error"),
            }
        )
    rows.sort(key=lambda r: (r["state"] != "complete", -_or_lowest(_score(r)), r["number"]))
    return SweepResult(out, [d.key for d in plan.dimensions if d.key != SPEC_KEY], rows)


def selection_accuracy(val: float | None, test: float | None) -> float | None:
    """What a sweep chooses on: validation accuracy; test only for runs without a validation split (val_split 0,
    which their own output says)."""
    return val if val is not None else test


def _as_score(value: float | None, lower_is_better: bool) -> float | None:
    """A selection value as a score where higher is better (what the study maximizes)."""
    return None if value is None else (-value if lower_is_better else value)


def _or_lowest(score: float | None) -> float:
    return -math.inf if score is None else score


def _metric(row: dict[str, Any]) -> str:
    """The metric a trial (a results row or its user attributes) is chosen on: accuracy, or its task's."""
    return row.get("metric", "accuracy")


def _metric_words(row: dict[str, Any]) -> str:
    return _metric(row).replace("_", " ")


def _value(row: dict[str, Any], split: str) -> float | None:
    return row.get(f"{split}_{_metric(row)}")


def _score(row: dict[str, Any]) -> float | None:
    return _as_score(selection_accuracy(_value(row, "val"), _value(row, "test")), bool(row.get("lower_is_better")))


def write_results(result: SweepResult, plan: SweepPlan) -> None:
    out = result.sweep_dir
    atomic_write_json(out / "results.json", result.to_dict())
    buffer = io.StringIO()
    metric = _metric(result.trials[0]) if result.trials else "accuracy"
    columns = ["number", "spec", *result.keys, "state", f"val_{metric}", f"test_{metric}", f"train_{metric}",
               "train_loss", "examples_per_sec", "params", "epochs_run", "seconds", "run_dir", "error"]  # fmt: skip
    columns = list(dict.fromkeys(columns))  # (chosen on the loss, train_loss is named twice)
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in result.trials:
        writer.writerow({**{k: row.get(k) for k in columns}, **row["overrides"]})
    atomic_write_text(out / "results.csv", buffer.getvalue())
    _plot_curves(result)
    _plot_gap(result)
    result.files = ["results.csv", "results.json", "curves.png", "gap.png"]
    if plan.sampler == "grid" and len(plan.dimensions) == 2 and _plot_heatmap(result, plan):  # a grid has no ranges
        result.files.append("heatmap.png")


# Optuna's importance estimate needs enough finished trials to mean anything (with a 3×3 grid it is noise).
OPTUNA_PLOTS_MIN_TRIALS = 12


def write_optuna_plots(study: Any, result: SweepResult) -> None:
    """Optuna's own parameter-importance and parallel-coordinate plots, where they add something."""
    finished = [t for t in result.trials if t["state"] == "complete"]
    if len(result.keys) < 2 or len(finished) < OPTUNA_PLOTS_MIN_TRIALS:
        return
    result.files += plots.write_optuna_plots(study, result.sweep_dir)


def _trial_label(row: dict[str, Any], several_specs: bool) -> str:
    label = _label(row["overrides"])
    return f"{row['spec']} {label}".strip() if several_specs else label or row["spec"]


def _plot_curves(result: SweepResult) -> None:
    several = len({r["spec"] for r in result.trials}) > 1
    curves = []
    for row in result.trials:
        folder = RunDir(Path(row["run_dir"] or ""))
        if not folder.metrics_file.exists():
            continue
        epochs = json.loads(folder.metrics_file.read_text())
        if not epochs:
            continue
        curves.append(plots.TrialCurve(
            label=f"#{row['number']} {_trial_label(row, several)}",
            complete=row["state"] == "complete",
            epochs=[m["epoch"] for m in epochs],
            accuracy=[selection_accuracy(m.get(f"val_{_metric(row)}"), m.get(f"test_{_metric(row)}")) for m in epochs],
            train_loss=[m["train_loss"] for m in epochs],
        ))  # fmt: skip
    plots.plot_trial_curves(result.sweep_dir / "curves.png", curves)


def _plot_gap(result: SweepResult) -> None:
    rows = [r for r in result.trials if _score(r) is not None and _value(r, "train") is not None]
    several = len({r["spec"] for r in result.trials}) > 1
    plots.plot_gap(
        result.sweep_dir / "gap.png",
        [f"#{r['number']} {_trial_label(r, several)}" for r in rows],
        [_value(r, "train") or 0.0 for r in rows],
        [selection_accuracy(_value(r, "val"), _value(r, "test")) or 0.0 for r in rows],
    )


def _plot_heatmap(result: SweepResult, plan: SweepPlan) -> bool:
    """The grid's selection accuracies as a heatmap; False (nothing written) when no trial completed."""
    (ky, vy), (kx, vx) = [(d.key, d.values or []) for d in plan.dimensions]
    grid = [[math.nan] * len(vx) for _ in vy]
    notes = [["not run"] * len(vx) for _ in vy]
    for row in result.trials:
        params = {**row["overrides"], SPEC_KEY: row["spec"]}
        i, j = vy.index(params[ky]), vx.index(params[kx])
        notes[i][j] = row["state"]
        value = selection_accuracy(_value(row, "val"), _value(row, "test"))
        if value is not None and row["state"] == "complete":
            grid[i][j] = value
    if not any(not math.isnan(v) for line in grid for v in line):
        return False
    plots.plot_heatmap(result.sweep_dir / "heatmap.png", grid, notes, x=(kx, vx), y=(ky, vy))
    return True


def results_table(result: SweepResult) -> Any:
    from rich.table import Table

    several = len({r["spec"] for r in result.trials}) > 1
    best = result.best
    title = "sweep: no trial completed"
    if best is not None:
        label = f"best: trial {best['number']} ({_trial_label(best, several)})"
        words, val, test = _metric_words(best), _value(best, "val"), _value(best, "test")
        if val is None:  # val_split 0: the runs said they choose on test
            title = f"{label}, chosen on test {words} {test:.4f} (no validation split)"
        else:
            title = f"{label}, chosen on validation {words} {val:.4f}" + (
                f"; its test {words} {test:.4f}" if test is not None else ""
            )
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    if several:
        table.add_column("spec")
    for key in result.keys:
        table.add_column(key, justify="right")
    short = {"accuracy": "acc"}.get(metric := _metric(best or {}), metric.replace("_", " "))
    # (chosen on the loss, the train column is the train loss's: shown once)
    train_metric = [f"train {short}"] if short != "loss" else []
    names = (f"val {short}", f"test {short}", *train_metric, "train loss", "examples/s", "params", "state", "time s")
    for name in names:
        table.add_column(name, justify="right" if name != "state" else "left")

    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for row in result.trials:
        cells = [str(row["number"])] + ([row["spec"]] if several else [])
        cells += [str(row["overrides"].get(k, "")) for k in result.keys]
        state = row["state"] + (f": {row['error'][:40]}" if row["error"] else "")
        cells += [
            num(_value(row, "val"), ".4f"), num(_value(row, "test"), ".4f"),
            *(num(_value(row, "train"), ".4f") for _ in train_metric), num(row["train_loss"], ".4f"),
            num(row["examples_per_sec"], ",.0f"), num(row["params"], ","), state, num(row["seconds"], ".1f"),
        ]  # fmt: skip
        table.add_row(*cells)
    return table


# --- the entry point -------------------------------------------------------------------------------


def sweep(
    plan: SweepPlan | None = None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    report: Reporter = print,
    overwrite: bool = False,
) -> SweepResult:
    """Run (or resume) a sweep; returns its trials, best first. An `out` that holds a sweep is refused unless
    `overwrite`."""
    storage = None
    if resume is not None:
        folder = Path(resume)
        if not (folder / "sweep.json").exists():
            raise UsageError(f"--resume {folder}: not a sweep folder (no sweep.json)")
        plan = SweepPlan.from_dict(json.loads((folder / "sweep.json").read_text()))
        claim = runfolder.claim(folder, "sweep", existing=True)
    elif plan is None:
        raise UsageError("give a sweep plan or --resume DIR")
    else:
        if out is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            out = runfolder.free_name(Path("runs") / f"sweep-{'+'.join(plan.specs)}-{stamp}")
        folder = Path(out)
        runfolder.check_new(folder, "sweep", overwrite=overwrite)
        # A shared --storage is opened first, so that a bad URL is refused before the run folder is made.
        storage = open_storage(plan.storage, report) if plan.storage is not None else None
        claim = runfolder.claim(folder, "sweep", overwrite=overwrite)
    try:
        if resume is None:
            atomic_write_json(folder / "sweep.json", plan.to_dict())
        if storage is None:
            storage = open_storage(plan.storage or f"sqlite:///{(folder / STUDY_DB).resolve()}", report)
        sweeper = _Sweeper(plan, folder, report)
        study = sweeper.study(storage, resume is not None)
        stopped_by = None
        try:
            with stop_requests() as sweeper.stop:
                sweeper.run(study)
            stopped_by = signal.Signals(sweeper.stop[0]).name if sweeper.stop else None
        except (Interrupted, KeyboardInterrupt):  # a trial's training stopped at a signal, after a checkpoint
            stopped_by = "a stop request"
        finally:  # also after Ctrl-C: what has finished is in the table and files
            result = collect(study, plan, folder)
            if result.trials:
                write_results(result, plan)
        if stopped_by:
            raise Interrupted(
                f"sweep stopped by {stopped_by}; the finished trials are in {folder}. Finish it (stopped trials "
                f"continue from their checkpoints) with: netspec sweep --resume {folder}"
            )
        write_optuna_plots(study, result)
        return result
    finally:
        claim.release()
