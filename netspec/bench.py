"""Stage 5b: honest throughput figures for a spec.

Method: inputs are generated once for the spec's input shape and already sit on
the device, so a figure measures the model step itself (train: zero_grad, forward,
loss, backward, optimizer step; infer: forward in eval mode under inference_mode).
Each variant gets warm-up steps first (for torch.compile the first call, which
compiles, is timed on its own as compile time and never mixed into throughput),
then `repeats` timed runs of `steps` steps each, synchronized on CUDA; the median
run is reported with the minimum and maximum. Peak memory is the most tensor memory alive at
once over the warm-up (what the step holds when it begins, plus what the warm-up allocates above that),
as the allocator counts it (CUDA's peak statistics; on CPU the
allocator's events through torch.profiler, see memory.PeakMemory); beside it, the memory model's
prediction for an eager step (memory.py). A batch size that
does not fit in memory is reported as "oom" and the sweep goes on; `auto` picks the
largest batch that fits (memory.auto_batch_size). When the repeats of a cell are more
than UNSTABLE_SPREAD apart (max/min), the cell is marked unstable (`stable: false` and
a `note` saying why), in the JSON and the table.
"""

from __future__ import annotations

import gc
import io
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netspec.compiler import build
from netspec.device import autocast, resolve_device
from netspec.engine import TrainStep, make_optimizer
from netspec.errors import UsageError
from netspec.memory import PeakMemory, auto_batch_size, estimate, format_bytes, is_oom
from netspec.shapes import infer_shapes
from netspec.spec import Spec, load_spec

# Repeats of one cell further apart than this (slowest / fastest) mean something else was using the machine.
UNSTABLE_SPREAD = 1.5


@dataclass(frozen=True)
class Variant:
    compile: bool = False
    amp: str = "none"
    channels_last: bool = False

    @property
    def label(self) -> str:
        parts = ["compiled" if self.compile else "eager"]
        if self.amp != "none":
            parts.append(self.amp)
        if self.channels_last:
            parts.append("channels_last")
        return "+".join(parts)


@dataclass
class BenchResult:
    device: str
    mode: str
    batch_size: int
    compile: bool
    amp: str
    channels_last: bool
    examples_per_sec: float | None = None
    examples_per_sec_min: float | None = None
    examples_per_sec_max: float | None = None
    step_ms_median: float | None = None
    compile_s: float | None = None
    peak_mem_bytes: int | None = None
    predicted_peak_bytes: int | None = None  # the memory model's, for an eager step
    repeats: int = 0
    status: str = "ok"
    speedup: float | None = None  # over eager fp32 at the same device, mode and batch size
    stable: bool | None = None  # False when the repeats were more than UNSTABLE_SPREAD apart; None: one repeat
    note: str | None = None  # why a figure is not to be trusted

    @property
    def variant(self) -> Variant:
        return Variant(self.compile, self.amp, self.channels_last)


@dataclass
class BenchReport:
    spec: str
    env: dict[str, Any]
    results: list[BenchResult] = field(default_factory=list)

    @property
    def stable(self) -> bool:
        return all(r.stable is not False for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "env": self.env, "stable": self.stable, "results": [asdict(r) for r in self.results]}


def environment() -> dict[str, Any]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "devices": devices,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


# --- one measurement ---------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PreparedStep:
    """A ready-to-time step (call it) and what it holds between calls: the model, its optimizer and inputs."""

    run: Callable[[], None]
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    optimizer: torch.optim.Optimizer | None = None

    def __call__(self) -> None:
        self.run()

    def held_bytes(self) -> int:
        """Bytes of the tensors alive between steps (parameters, buffers, gradients, optimizer state, inputs),
        each storage once."""
        params = list(self.model.parameters())
        tensors = [*params, *self.model.buffers(), *self.inputs, *(p.grad for p in params if p.grad is not None)]
        if self.optimizer is not None:
            tensors += [v for state in self.optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
        return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def _make_step(
    model: nn.Module, runner: nn.Module, spec: Spec, mode: str, variant: Variant, x: torch.Tensor, device: torch.device
) -> PreparedStep:
    if mode == "infer":
        model.eval()

        def infer_step() -> None:
            with torch.inference_mode(), autocast(device, variant.amp):
                runner(x)

        return PreparedStep(infer_step, model, (x,))

    model.train()
    out_shape = model.net_shape.output_shape  # type: ignore[attr-defined]
    classes = out_shape[0] if len(out_shape) == 1 else 1
    y = torch.randint(0, classes, (x.shape[0],), device=device)
    cfg = spec.train
    # A small learning rate: random labels with the spec's own (often large) rate can drive the
    # weights to inf/NaN within a benchmark, and non-finite arithmetic runs at a different speed.
    optimizer = make_optimizer(model.parameters(), "sgd", lr=min(cfg.lr, 1e-3), momentum=cfg.momentum)
    loss_fn = nn.CrossEntropyLoss()

    def loss_of(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss_fn(out, target) if len(out_shape) == 1 else out.mean()

    step = TrainStep(runner, optimizer, loss_of, device, amp=variant.amp)  # the step `netspec train` runs

    def train_step() -> None:
        step(x, y)

    return PreparedStep(train_step, model, (x, y), optimizer)


def prepare_step(
    spec: Spec, device: torch.device, mode: str, batch_size: int, variant: Variant, compile_mode: str | None = None
) -> tuple[PreparedStep, float | None]:
    """A ready-to-time step on inputs already on the device, and the compile time (first call)."""
    torch.manual_seed(0)
    model = build(spec).to(device)
    x = torch.randn(batch_size, *spec.input, device=device)
    if variant.channels_last and x.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant.compile:
        # Fresh compilation per cell: otherwise dynamo reuses graphs from earlier batch sizes and
        # switches to dynamic shapes, and both compile time and throughput would depend on order.
        torch._dynamo.reset()
    runner = torch.compile(model, mode=compile_mode) if variant.compile else model
    step = _make_step(model, runner, spec, mode, variant, x, device)
    compile_s = None
    if variant.compile:  # the first call compiles: timed on its own, never mixed into throughput
        start = time.perf_counter()
        step()
        _sync(device)
        compile_s = time.perf_counter() - start
    return step, compile_s


def predicted_peak(spec: Spec, device: torch.device, mode: str, batch_size: int, amp: str) -> int:
    """The memory model's peak for a bench cell: a training step with the bench's optimizer (SGD with the spec's
    momentum), or inference."""
    memory = estimate(
        infer_shapes(spec), batch_size, amp=amp, optimizer="sgd", momentum=spec.train.momentum,
        device="cuda" if device.type == "cuda" else "cpu",
    )  # fmt: skip
    return memory.peak_train if mode == "train" else memory.peak_infer


def measure(
    spec: Spec,
    device: torch.device,
    mode: str,
    batch_size: int,
    variant: Variant,
    *,
    warmup: int = 5,
    steps: int = 20,
    repeats: int = 5,
    compile_mode: str | None = None,
) -> BenchResult:
    """Measure one (device, mode, batch size, variant) cell."""
    result = BenchResult(str(device), mode, batch_size, variant.compile, variant.amp, variant.channels_last)
    result.predicted_peak_bytes = predicted_peak(spec, device, mode, batch_size, variant.amp)
    step: PreparedStep | None = None
    try:
        # Built and (for torch.compile) compiled unobserved, so that the compile time is not taken under the
        # profiler. The peak is what the step holds at the start of the warm-up (parameters, inputs, and for a
        # compiled cell the gradients and optimizer state of its first call) plus the most the warm-up (at least
        # two steps: the second has the optimizer state) allocates above that; the timed runs repeat the same
        # step and run unobserved.
        step, result.compile_s = prepare_step(spec, device, mode, batch_size, variant, compile_mode)
        held = step.held_bytes()
        with PeakMemory(device) as memory:
            for _ in range(max(warmup, 2)):
                step()
            _sync(device)
        step_seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(device)
            step_seconds.append((time.perf_counter() - start) / steps)
        median = statistics.median(step_seconds)
        result.examples_per_sec = batch_size / median
        result.examples_per_sec_min = batch_size / max(step_seconds)
        result.examples_per_sec_max = batch_size / min(step_seconds)
        result.step_ms_median = median * 1000
        result.peak_mem_bytes = None if memory.peak is None else held + memory.peak
        result.repeats = repeats
        _mark_stability(result, max(step_seconds) / min(step_seconds))
    except Exception as exc:
        result.status = "oom" if is_oom(exc) else f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        step = None  # free the model and inputs before the next cell
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def _mark_stability(result: BenchResult, spread: float) -> None:
    """Flag a cell whose repeats disagree, and say why: other work on the machine slowed some repeats."""
    if result.repeats < 2:
        return
    result.stable = spread <= UNSTABLE_SPREAD
    if result.stable:
        return
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > cores:
        cause = f"other processes were running (load average {load:.1f} on {cores} cores)"
    else:
        shown = f"load average {load:.1f} on {cores} cores; " if load is not None else ""
        cause = f"{shown}something else slowed some repeats (other work, frequency scaling, thermal limits)"
    result.note = (
        f"unstable: the {result.repeats} repeats ranged {result.examples_per_sec_min:,.0f}–"
        f"{result.examples_per_sec_max:,.0f} examples/s ({spread:.1f}× apart): {cause}; compare only figures "
        "measured side by side, or rerun on an idle machine"
    )


def measure_end_to_end(spec: Spec, device: torch.device, batch_size: int, overrides: dict[str, Any]) -> BenchResult:
    """Examples/sec of one `netspec train` epoch on a real dataset: data path included."""
    from netspec.train import train

    result = BenchResult(str(device), "train-end-to-end", batch_size, False, "none", False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = train(
                spec,
                {**overrides, "epochs": 1, "batch_size": batch_size, "device": str(device)},
                out=tmp,
                report=lambda line: None,
                progress=False,
            )
        result.examples_per_sec = run.last.examples_per_sec
        result.step_ms_median = 1000 * batch_size / run.last.examples_per_sec
        result.repeats = 1
    except Exception as exc:
        if not is_oom(exc):
            raise
        result.status = "oom"
    return result


# --- a whole sweep -----------------------------------------------------------------------------


def variants(compile: str, amp: str, channels_last: bool) -> list[Variant]:
    """Eager fp32 is always measured when eager runs, as the baseline of the speedups."""
    compiled = {"off": [False], "on": [True], "both": [False, True]}[compile]
    options = [("none", False)] + ([(amp, channels_last)] if (amp, channels_last) != ("none", False) else [])
    return [Variant(c, a, cl) for c in compiled for a, cl in options]


def bench_table(report: BenchReport, width: int | None = None) -> Any:
    """The table of `netspec bench`, with its footnotes: the widest layout that fits `width` columns (a
    terminal, a notebook cell), folding what matters least first and never a number."""
    from rich.console import Console, Group
    from rich.measure import Measurement
    from rich.text import Text

    layouts = [_table(report, layout) for layout in LAYOUTS]
    chosen = layouts[0]
    if width is not None:
        console = Console(width=10_000, file=io.StringIO())  # a measurement is capped at the console's width
        chosen = next((t for t in layouts if Measurement.get(console, console.options, t).maximum <= width), chosen)
        chosen = chosen if Measurement.get(console, console.options, chosen).maximum <= width else layouts[-1]
    notes = _footnotes(report)
    return Group(chosen, *(Text(note, style="dim") for note in notes)) if notes else chosen


# From the widest to the narrowest: everything on one line; the min–max range under the median, headers and
# variants on two lines, failures in the figures' place; no vertical rules; the predicted peak under the measured
# one and the device above the mode.
LAYOUTS = ("wide", "folded", "plain", "stacked")
UNSTABLE_MARK = "*"


def _table(report: BenchReport, layout: str) -> Any:
    """Columns that would say the same on every row go into the title (one device) or away (no compiled cell:
    no compile time; no variant but the baseline: no speedup; every cell ok: no status)."""
    from rich import box
    from rich.table import Table

    results = report.results
    folded = layout != "wide"
    devices = sorted({r.device for r in results})
    on = f" on {devices[0]}" if len(devices) == 1 else ""
    title = f"{report.spec}{on} — {report.env['cpu']}, torch {report.env['torch']}"
    if layout in ("plain", "stacked"):
        table = Table(
            title=title, title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False,
            show_edge=False,
        )  # fmt: skip
    else:
        table = Table(title=title, title_justify="left", box=box.HEAVY_HEAD)
    unstable = {id(r) for r in results if r.stable is False}
    baselines = {(r.device, r.mode, r.batch_size): r for r in results if r.variant == Variant()}

    def mark(r: BenchResult) -> str:
        return UNSTABLE_MARK if id(r) in unstable else ""

    def speedup(r: BenchResult) -> str:
        base = baselines.get((r.device, r.mode, r.batch_size))
        shaky = id(r) in unstable or (base is not None and id(base) in unstable)
        return f"{r.speedup:.2f}×" + (UNSTABLE_MARK if shaky else "") if r.speedup else "-"

    def throughput(r: BenchResult) -> str:
        if r.examples_per_sec is None:
            return _short_status(r) if folded else "-"
        median = f"{r.examples_per_sec:,.0f}{mark(r)}"
        if r.examples_per_sec_min is None or r.examples_per_sec_max is None:
            return median
        spread = f"{r.examples_per_sec_min:,.0f}–{r.examples_per_sec_max:,.0f}"
        return f"{median}\n[dim]{spread}[/dim]" if folded else f"{median} ({spread})"

    def variant(r: BenchResult) -> str:
        return r.variant.label.replace("channels_last", "NHWC").replace("+", "\n") if folded else r.variant.label

    columns: list[tuple[str, str, Callable[[BenchResult], str]]] = []
    if len(devices) > 1 and layout == "stacked":
        columns.append(("device\nmode", "left", lambda r: f"{r.device}\n{r.mode}"))
    else:
        if len(devices) > 1:
            columns.append(("device", "left", lambda r: r.device))
        columns.append(("mode", "left", lambda r: r.mode))
    columns += [
        ("batch", "right", lambda r: str(r.batch_size)),
        ("variant", "left", variant),
        ("examples/s\n(min–max)" if folded else "examples/s (min–max)", "right", throughput),
        ("ms/step", "right", lambda r: f"{r.step_ms_median:.2f}" if r.step_ms_median else "-"),
    ]
    if any(r.compile for r in results):
        compile_s = (
            "compile\ns" if folded else "compile s",
            "right",
            lambda r: f"{r.compile_s:.1f}" if r.compile_s else "-",
        )
        columns.append(compile_s)
    predicted = any(r.predicted_peak_bytes is not None for r in results)
    if predicted and layout == "stacked":  # the prediction under the measured peak, as the range under the median
        columns.append(
            (
                "peak mem\n(predicted)",
                "right",
                lambda r: f"{format_bytes(r.peak_mem_bytes)}\n[dim]{format_bytes(r.predicted_peak_bytes)}[/dim]",
            )
        )
    else:
        columns.append(("peak\nmem" if folded else "peak mem", "right", lambda r: format_bytes(r.peak_mem_bytes)))
        if predicted:
            columns.append(
                ("pre-\ndicted" if folded else "predicted", "right", lambda r: format_bytes(r.predicted_peak_bytes))
            )
    if any(r.variant != Variant() for r in results):
        columns.append(("speedup", "right", speedup))
    if not folded and any(r.status != "ok" for r in results):
        columns.append(("status", "left", _short_status))
    for name, justify, _ in columns:
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in results:
        table.add_row(*(cell(r) for _, _, cell in columns))
    return table


def _short_status(r: BenchResult) -> str:
    return "error†" if r.status.startswith("error") else r.status


def _footnotes(report: BenchReport) -> list[str]:
    notes = [
        "peak mem: the most tensor memory alive at once while the cell's model was built and warmed up (the CUDA "
        "allocator's peak; on CPU, the CPU allocator's own events through torch.profiler: the tensors' bytes, not "
        "the process's resident set). predicted: netspec's memory model for an eager step, the figure to plan with."
    ]
    unstable = [r for r in report.results if r.stable is False]
    if unstable:
        notes.append(
            f"{UNSTABLE_MARK} unstable: the repeats of {len(unstable)} cell{'s' if len(unstable) > 1 else ''} were more "
            f"than {UNSTABLE_SPREAD}× apart (max/min), so other load on the machine slowed some of them; "
            "compare only figures measured side by side, or rerun on an idle machine (each cell's `note` in --json "
            "says more)."
        )
    for r in report.results:
        if r.status.startswith("error"):
            notes.append(f"† {r.device} {r.mode} batch {r.batch_size} {r.variant.label}: {r.status}")
    return notes


def bench(
    spec: Spec | str | Path,
    *,
    devices: list[str] | None = None,
    batch_sizes: list[int | str] | None = None,
    modes: list[str] | None = None,
    compile: str | None = None,
    amp: str | None = None,
    channels_last: bool | None = None,
    warmup: int | None = None,
    steps: int | None = None,
    repeats: int | None = None,
    compile_mode: str | None = None,
    end_to_end: bool = False,
    train_overrides: dict[str, Any] | None = None,
    on_result: Callable[[BenchResult], None] | None = None,
    memory_budget: int | None = None,
    memory_fraction: float = 0.9,
    on_message: Callable[[str], None] | None = None,
) -> BenchReport:
    """Benchmark a spec; arguments left None come from its `bench:` section. A batch size "auto" is, per device,
    the largest whose eager float32 training step fits the memory budget (memory.auto_batch_size)."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    cfg = spec.bench
    device_names = devices or cfg.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    resolved = [resolve_device(name) for name in device_names]
    sizes = batch_sizes or cfg.batch_sizes or [spec.train.batch_size]
    report = BenchReport(spec.source.file or spec.name, environment())
    cells = variants(
        compile or cfg.compile, amp or cfg.amp, cfg.channels_last if channels_last is None else channels_last
    )
    timing = {
        "warmup": cfg.warmup if warmup is None else warmup,
        "steps": steps or cfg.steps,
        "repeats": repeats or cfg.repeats,
        "compile_mode": compile_mode,
    }
    for device in resolved:
        device_sizes = list(sizes)
        if "auto" in device_sizes:
            chosen = _auto_batch(spec, device, memory_budget, memory_fraction, on_message)
            device_sizes = [chosen if b == "auto" else b for b in device_sizes]
        for batch_size in device_sizes:
            jobs = [(None, None)] if end_to_end else [(m, v) for m in modes or cfg.modes for v in cells]
            results: list[BenchResult] = []
            for mode, variant in jobs:
                if mode is None or variant is None:
                    result = measure_end_to_end(spec, device, batch_size, train_overrides or {})
                else:
                    result = measure(spec, device, mode, batch_size, variant, **timing)
                results.append(result)
                if on_result:  # live progress, one line per cell as it finishes
                    on_result(result)
            _add_speedups(results)
            report.results.extend(results)
    if not report.results:
        raise UsageError("nothing to measure")
    return report


def _auto_batch(
    spec: Spec, device: torch.device, budget: int | None, fraction: float, report: Callable[[str], None] | None
) -> int:
    """The largest batch whose training step (eager, float32, the bench's SGD) fits the budget on `device`."""
    choice = auto_batch_size(
        infer_shapes(spec), device, optimizer="sgd", momentum=spec.train.momentum, budget=budget, fraction=fraction
    )
    if report:
        report(f"{device}: {choice.describe()}")
    return choice.batch_size


def _add_speedups(results: list[BenchResult]) -> None:
    for r in results:
        base = next(
            (b for b in results if b.mode == r.mode and b.variant == Variant() and b.examples_per_sec),
            None,
        )
        if base is not None and r.examples_per_sec:
            r.speedup = r.examples_per_sec / base.examples_per_sec  # type: ignore[operator]
