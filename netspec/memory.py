"""Stage 5c: the memory a training step of a spec needs, predicted from its shapes alone.

The prediction walks the shaped tree (shapes.py) as the compiled network runs it (taps, branches,
merges) on symbolic tensors: each layer kind replays its forward with `saved_for_backward`
(layers/saved.py) and marks what autograd keeps for backward. A storage is counted once however
many layers save it or a view of it, under the first layer that saves it.

A training step's peak is bounded by

    parameters + buffers + gradients + optimizer state + saved activations (at the end of the forward)
    + the network's output and loss + the largest transient of the backward pass,

where a layer's transient is the gradient of its output and of its inputs plus its largest
intermediate (an attention matrix, a padded copy). It is an upper bound of the allocator's own
count: gradients appear while saved activations are freed, and the first step allocates the
optimizer state only after the backward pass. Inference needs the parameters and buffers and, at
the worst layer, every activation still to be read, its output and its largest intermediate.

Known approximations: cuDNN and oneDNN workspaces, the CUDA caching allocator's rounding (512-byte
blocks, 2 MiB segments), autocast's casts of biases and of inputs that are not saved, channels_last
layouts and torch.compile (whose partitioner saves its own set; predictions are for eager mode) are
not modelled. Activation checkpointing (torch.utils.checkpoint) would
replace a checkpointed segment's saved activations by its input, and add the largest segment's
activations back as a transient during its recomputation.

`measure_saved` counts the same thing for real, with torch.autograd.graph.saved_tensors_hooks;
tests/test_memory.py holds every zoo spec to it. `auto_batch_size` picks the largest batch that
fits a memory budget and confirms it with a real training step.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from netspec.config import AmpMode, MemoryDevice, Optimizer, TrainConfig, choices
from netspec.errors import UsageError
from netspec.layers.saved import ACTIVATION, INPUT, WEIGHT_CAST, Run, Settings, Storage, Tensor, contiguous_strides
from netspec.shapes import LayerInfo, NetShape, ShapedMerge, ShapedNode, ShapedSeq


def optimizer_copies(optimizer: str, momentum: float = 0.0) -> int:
    """Tensors of optimizer state per parameter: SGD's momentum buffer, Adam's two moments."""
    if optimizer not in choices(Optimizer):
        raise UsageError(f"unknown optimizer '{optimizer}' (use {', '.join(choices(Optimizer))})")
    if optimizer == "sgd":
        return 1 if momentum > 0 else 0
    return 2


@dataclass
class RowMemory:
    """One row of the summary: what its layer (or merge) saves and needs while training."""

    info: LayerInfo
    saved: int = 0  # bytes of the storages this row is the first to save
    transient: int = 0  # gradients of its output and inputs and its largest intermediate, during backward
    buffers: int = 0


@dataclass
class MemoryEstimate:
    """The prediction for one batch size, precision and optimizer (all figures in bytes, per process)."""

    batch_size: int
    amp: str
    optimizer: str
    momentum: float
    device: str
    params: int
    buffers: int
    grads: int
    optimizer_state: int
    activations: int  # saved for backward, at the end of the forward
    output: int  # the network's output and the loss's saved log-probabilities
    transient: int  # the largest transient of the backward pass
    peak_train: int
    peak_infer: int
    rows: list[RowMemory] = field(default_factory=list)

    def to_dict(self, processes: int = 1) -> dict[str, Any]:
        """The `memory` object of `netspec build --json`: bytes per process, and what they were predicted for."""
        return {
            "params": self.params,
            "grads": self.grads,
            "optimizer": self.optimizer_state,
            "activations": self.activations,
            "peak_train": self.peak_train,
            "peak_infer": self.peak_infer,
            "buffers": self.buffers,
            "output": self.output,
            "transient": self.transient,
            "settings": {
                "batch_size": self.batch_size,
                "processes": processes,
                "global_batch_size": self.batch_size * processes,
                "amp": self.amp,
                "optimizer": self.optimizer,
                "momentum": self.momentum,
                "device": self.device,
            },
        }


@dataclass
class _Step:
    """One row as it ran: what it read and produced, for the liveness of the inference walk."""

    inputs: list[Tensor]
    output: Tensor
    largest_intermediate: int
    weight_casts: int  # bytes of autocast's weight copies it made (cached until the forward ends)


@dataclass
class _Walker:
    """Runs the shaped tree on symbolic tensors, as compiler.Block's programs run the real ones."""

    settings: Settings
    rows: dict[int, RowMemory] = field(default_factory=dict)
    steps: list[_Step] = field(default_factory=list)
    counted: set[Storage] = field(default_factory=set)  # storages already counted as saved (by identity)

    def seq(self, seq: ShapedSeq, x: Tensor) -> Tensor:
        values = [x]
        for child, source in zip(seq.children, seq.sources, strict=True):
            inputs = [values[-1]] if source is None else [values[j] for j in source]
            values.append(self.node(child, inputs))
        return values[-1]

    def node(self, node: ShapedNode, inputs: list[Tensor]) -> Tensor:
        if isinstance(node, ShapedMerge):
            outs = [self.seq(b, inputs[i] if len(inputs) > 1 else inputs[0]) for i, b in enumerate(node.branches)]
            return self.row(node.info, outs)
        if isinstance(node, LayerInfo):
            return self.row(node, inputs[:1])
        return self.seq(node, inputs[0])

    def row(self, info: LayerInfo, inputs: list[Tensor]) -> Tensor:
        batch = self.settings.batch
        requires_grad = any(x.requires_grad for x in inputs) or info.params > 0
        run = Run(inputs, info.output_shape, self.settings, requires_grad)
        out = info.layer.saved_for_backward(run)
        if out.shape != (batch, *info.output_shape):  # a kind's memory rule disagrees with its shape rule
            raise AssertionError(
                f"{info.path} {info.kind}: memory rule gives {out.shape[1:]}, shape rule {info.output_shape}"
            )
        memory = RowMemory(info, buffers=run.buffer_bytes)
        if self.settings.training and requires_grad:
            for tensor in run.saved:
                storage = tensor.storage
                if storage.role in (ACTIVATION, INPUT, WEIGHT_CAST) and storage not in self.counted:
                    self.counted.add(storage)
                    memory.saved += storage.nbytes
        intermediates = [t.nbytes for t in run.created if t.storage is not out.storage and t.storage.role == ACTIVATION]
        largest = max(intermediates, default=0)
        memory.transient = sum(x.nbytes for x in inputs if x.requires_grad) + out.nbytes + largest
        self.rows[info.index] = memory
        casts = sum(t.nbytes for t in run.created if t.storage.role == WEIGHT_CAST)
        self.steps.append(_Step(inputs, out, largest, casts))
        return out


def _walk(net: NetShape, settings: Settings) -> tuple[_Walker, Tensor, Tensor]:
    shape = (settings.batch, *net.input_shape)
    x = Tensor(shape, contiguous_strides(shape), Storage(math.prod(shape) * 4, INPUT), requires_grad=False)
    walker = _Walker(settings)
    return walker, x, walker.seq(net.root, x)


def _inference_peak(steps: list[_Step], x: Tensor) -> int:
    """The most activation memory alive at once in an inference forward: the storages that a later step still
    reads (the input batch throughout), the step's output and its largest intermediate, and under AMP the weight
    copies autocast has made so far."""
    last_read: dict[Storage, int] = {x.storage: len(steps)}
    for i, step in enumerate(steps):
        for t in step.inputs:
            if t.storage.role == ACTIVATION:
                last_read[t.storage] = i
    made_at: dict[Storage, int] = {x.storage: -1}
    peak = casts = 0
    for i, step in enumerate(steps):
        if step.output.storage.role == ACTIVATION:
            made_at.setdefault(step.output.storage, i)
        casts += step.weight_casts
        alive = sum(s.nbytes for s, made in made_at.items() if made == i or made < i <= last_read.get(s, made))
        peak = max(peak, alive + step.largest_intermediate + casts)
    return peak


def estimate(
    net: NetShape,
    batch_size: int,
    *,
    amp: str = "none",
    optimizer: str = "sgd",
    momentum: float = 0.0,
    device: str = "cuda",
) -> MemoryEstimate:
    """Predict the memory of training (and of inference) `net` at `batch_size` on one process."""
    if amp not in choices(AmpMode):
        raise UsageError(f"unknown amp '{amp}' (use {', '.join(choices(AmpMode))})")
    if device not in choices(MemoryDevice):
        raise UsageError(f"memory is predicted for {' or '.join(choices(MemoryDevice))}, not '{device}'")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    train, _x, out = _walk(net, Settings(batch_size, amp, device, training=True))
    infer, x_infer, _ = _walk(net, Settings(batch_size, amp, device, training=False))
    params = 4 * net.total_params
    buffers = sum(r.buffers for r in train.rows.values())
    state = optimizer_copies(optimizer, momentum) * params
    activations = sum(r.saved for r in train.rows.values())
    # The output (if no layer saved it) and the loss's log-probabilities, in float32.
    output = (0 if out.storage in train.counted else out.storage.nbytes) + 4 * out.numel
    transient = max((r.transient for r in train.rows.values()), default=0)
    rows = [train.rows[info.index] for info in net.layers]
    return MemoryEstimate(
        batch_size=batch_size,
        amp=amp,
        optimizer=optimizer,
        momentum=momentum,
        device=device,
        params=params,
        buffers=buffers,
        grads=params,
        optimizer_state=state,
        activations=activations,
        output=output,
        transient=transient,
        peak_train=params + buffers + params + state + activations + output + transient,
        peak_infer=params + buffers + _inference_peak(infer.steps, x_infer),
        rows=rows,
    )


# --- formatting and parsing ------------------------------------------------------------------

# KiB/MiB/GiB and a bare K/M/G/T (as docker's -m 8g) are binary; KB/MB/GB/TB decimal.
_UNITS = {"": 1, "b": 1}
for _power, _prefix in enumerate("kmgt", 1):
    _UNITS.update({_prefix: 1024**_power, f"{_prefix}ib": 1024**_power, f"{_prefix}b": 1000**_power})


def step_settings(
    cfg: TrainConfig, *, amp: str | None = None, optimizer: str | None = None, momentum: float | None = None
) -> dict[str, Any]:
    """The settings the memory of a training step depends on: the ones given, else the train section's
    (SGD's momentum only with SGD: the others keep no momentum buffer)."""
    optimizer = optimizer or cfg.optimizer
    if momentum is None:
        momentum = cfg.momentum if optimizer == "sgd" else 0.0
    return {"amp": amp or cfg.amp, "optimizer": optimizer, "momentum": momentum}


def settings_estimate(
    net: NetShape,
    cfg: TrainConfig,
    batch_size: int,
    processes: int = 1,
    *,
    amp: str | None = None,
    optimizer: str | None = None,
    momentum: float | None = None,
    device: str | None = None,
) -> MemoryEstimate:
    """`netspec build --batch-size N`: the estimate per process of a global batch shared by `processes`, with
    the train section's settings where none is given (device: whose rules its device follows)."""
    if batch_size % processes:
        raise UsageError(f"--batch-size {batch_size} does not divide among {processes} processes (the batch is global)")
    settings = step_settings(cfg, amp=amp, optimizer=optimizer, momentum=momentum)
    return estimate(net, batch_size // processes, **settings, device=device or _rules_of(cfg.device))


def _rules_of(device: str) -> str:
    """Whose rules the memory model follows for a spec's device: cpu, or cuda (also for auto on a GPU machine)."""
    from netspec.device import resolve_device

    try:
        kind = resolve_device(device).type
    except UsageError:
        kind = "cuda" if device.startswith("cuda") else "cpu"
    return "cpu" if kind == "cpu" else "cuda"


def format_bytes(n: int | float | None) -> str:
    """1536 -> '1.5 KiB' (binary units, as nvidia-smi and torch.cuda.memory_summary)."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def parse_bytes(text: str) -> int:
    """'8GiB', '8g', '512 MiB', '2GB' (decimal), '1000000' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"expected a size such as 8GiB, 512MiB or 2GB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[unit])


# --- measuring -------------------------------------------------------------------------------


def measure_saved(model: nn.Module, x: torch.Tensor, amp: str = "none") -> int:
    """Bytes of the distinct storages autograd saves during one training forward of `model` on `x`
    (torch.autograd.graph.saved_tensors_hooks; parameters and buffers are state, not activations)."""
    from netspec.device import autocast

    state = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in state:  # saved tensors stay alive, so no address is reused meanwhile
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast(x.device, amp):
        model(x)
    return sum(storages.values())


class PeakMemory:
    """Peak memory of a block of code as the allocator sees it: the most bytes of tensors alive at once, above
    what was alive when the block began. CUDA: the allocator's peak statistics. CPU: torch.profiler's memory
    events (each allocation and free of the CPU allocator, summed in order), so the figure is the tensors'
    own and not the resident set, which the C library's heap and everything else the process does inflate.
    Read `peak` after the block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = 0
        self._profiler: Any = None
        self._cpu_peak: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            from torch.profiler import ProfilerActivity, profile

            self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            with _quiet_native_stderr():  # Kineto logs each start and stop on stderr
                self._profiler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._profiler is None:
            return
        with _quiet_native_stderr():
            self._profiler.__exit__(*exc)
        if exc[0] is None:
            events = [e for e in self._profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
            alive = peak = 0
            for event in sorted(events, key=lambda e: e.start_ns()):
                alive += event.nbytes()  # negative for a free
                peak = max(peak, alive)
            self._cpu_peak = peak
        self._profiler = None

    @property
    def peak(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.start
        return self._cpu_peak


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to /dev/null for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        phrase in text for phrase in ("out of memory", "can't allocate memory", "not enough memory")
    )


def training_step_peak(
    net: NetShape,
    batch_size: int,
    device: torch.device,
    *,
    amp: str = "none",
    optimizer: str = "sgd",
    momentum: float = 0.0,
    steps: int = 2,
) -> int | None:
    """Build the network and run real training steps on random data at `batch_size`; the peak memory they took
    (PeakMemory; a second step has the optimizer state). A step at batch 2 runs first, unmeasured, so that
    one-time costs (kernel libraries, the cuBLAS workspace) are not counted. Raises the device's out-of-memory
    error."""
    from netspec.compiler import build
    from netspec.engine import TrainStep, make_optimizer

    def loss_of(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, target) if len(net.output_shape) == 1 else out.mean()

    def run(batch: int, count: int) -> None:
        model = build(net).to(device).train()
        opt = make_optimizer(model.parameters(), optimizer, lr=1e-3, momentum=momentum)
        step = TrainStep(model, opt, loss_of, device, amp=amp)  # the step `netspec train` runs
        x = torch.randn(batch, *net.input_shape, device=device)
        classes = net.output_shape[0] if len(net.output_shape) == 1 else 1
        y = torch.randint(0, classes, (batch,), device=device)
        for _ in range(count):
            step(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(2, 1)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with PeakMemory(device) as memory:
        run(batch_size, steps)
    peak = memory.peak
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return peak


# --- choosing a batch size -------------------------------------------------------------------


@dataclass
class BatchChoice:
    """What `--batch-size auto` chose, and why."""

    batch_size: int  # per process
    predicted_peak: int
    budget: int
    budget_source: str  # "90% of 20.1 GiB free on cuda:0" or "--memory-budget 8.0 GiB"
    measured_peak: int | None
    tried: list[int]  # batch sizes that were tried for real and did not fit, largest first
    processes: int = 1

    def describe(self) -> str:
        per = f" per process, on each of {self.processes} processes" if self.processes > 1 else ""
        measured = f", measured {format_bytes(self.measured_peak)} in one real step" if self.measured_peak else ""
        retried = f" (did not fit: {', '.join(map(str, self.tried))})" if self.tried else ""
        return (
            f"batch size auto: {self.batch_size}{per}{retried}: predicted peak {format_bytes(self.predicted_peak)}"
            f"{measured}; budget {format_bytes(self.budget)} ({self.budget_source})"
        )


def largest_fitting(predict: Callable[[int], int], budget: int, limit: int = 1 << 20) -> int:
    """The largest batch size whose predicted peak fits `budget` (0 if even 1 does not): predictions grow with
    the batch, so double, then bisect."""
    if predict(1) > budget:
        return 0
    low, high = 1, 2
    while high <= limit and predict(high) <= budget:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if predict(mid) <= budget else (low, mid)
    return min(low, limit)


def memory_budget(device: torch.device, budget: int | None, fraction: float) -> tuple[int, str]:
    """The bytes a process may use: the given budget, or a fraction of the CUDA device's free memory."""
    if budget is not None:
        return budget, f"--memory-budget {format_bytes(budget)}"
    if device.type != "cuda":
        raise UsageError(
            f"--batch-size auto on {device.type} needs --memory-budget (e.g. --memory-budget 8GiB): only a CUDA "
            "device reports its free memory"
        )
    free, _ = torch.cuda.mem_get_info(device)
    return int(free * fraction), f"{fraction:.0%} of {format_bytes(free)} free on {device}"


def auto_batch_size(
    net: NetShape,
    device: torch.device,
    *,
    amp: str = "none",
    optimizer: str = "sgd",
    momentum: float = 0.0,
    budget: int | None = None,
    fraction: float = 0.9,
    processes: int = 1,
    step: Callable[[int], int | None] | None = None,
) -> BatchChoice:
    """The largest per-process batch size whose predicted training peak fits the budget, confirmed by one real
    training step (`step(batch)` returns its measured peak; default `training_step_peak`) and reduced while
    that step runs out of memory (CUDA) or, on CPU, measures more than the budget."""
    limit, source = memory_budget(device, budget, fraction)
    kind = "cuda" if device.type == "cuda" else "cpu"

    def predict(batch: int) -> int:
        return estimate(net, batch, amp=amp, optimizer=optimizer, momentum=momentum, device=kind).peak_train

    batch = largest_fitting(predict, limit)
    if batch == 0:
        raise UsageError(
            f"batch size auto: even a batch of 1 is predicted to need {format_bytes(predict(1))}, more than the "
            f"budget {format_bytes(limit)} ({source})"
        )
    run_step = step or (
        lambda b: training_step_peak(net, b, device, amp=amp, optimizer=optimizer, momentum=momentum, steps=1)
    )
    tried: list[int] = []
    while True:
        try:
            measured = run_step(batch)
        except Exception as exc:
            if not is_oom(exc):
                raise
            measured = None
            if device.type == "cuda":
                torch.cuda.empty_cache()  # what the failed step cached goes back before a smaller try
        else:
            if device.type == "cuda" or measured is None or measured <= limit:
                return BatchChoice(batch, predict(batch), limit, source, measured, tried, processes)
        tried.append(batch)
        if batch == 1:
            raise UsageError(
                f"batch size auto: a training step of batch 1 does not fit {format_bytes(limit)} ({source})"
            )
        batch = max(1, batch * 3 // 4)
