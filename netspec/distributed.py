"""Training across processes and machines: torch.distributed set-up, sharding, reductions, launching.

netspec never launches or schedules processes itself: `netspec train --nproc-per-node N` hands
the command to torch's elastic launcher (`torch.distributed.run`, what `torchrun` runs), and
each worker finds its rank in the environment the launcher sets. The trainer stays the plain
single-process loop; in a worker it is given a `Dist` whose methods are the few collective
steps it needs (sums of metrics, a shared stop decision, rank 0's run folder).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from netspec.errors import Interrupted, NetspecError, UsageError
from netspec.runfolder import RunDir

# A collective that waits longer than this (a peer died or hangs) ends the job instead of hanging it.
TIMEOUT = datetime.timedelta(seconds=int(os.environ.get("NETSPEC_DIST_TIMEOUT", "120")))
# Launcher options that `netspec train` passes on to torch.distributed.run.
LAUNCH_OPTIONS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port", "rdzv_endpoint",
                  "rdzv_backend", "rdzv_id", "rdzv_conf", "local_addr", "max_restarts")  # fmt: skip


class WorkerFailed(NetspecError):
    """A worker of a distributed run died or failed; the run folder keeps its last checkpoint."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. The default is a single process: every method is a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum_(self, *tensors: torch.Tensor) -> None:
        """Sum tensors over all processes, in place."""
        if self.active:
            for t in tensors:
                torch.distributed.all_reduce(t, torch.distributed.ReduceOp.SUM)

    def max_(self, tensor: torch.Tensor) -> None:
        if self.active:
            torch.distributed.all_reduce(tensor, torch.distributed.ReduceOp.MAX)

    def from_main(self, value: Any) -> Any:
        """Rank 0's value, on every rank (e.g. the run folder it created)."""
        if not self.active:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


# The Dist of a run in one process: nothing to reduce or broadcast (not graph.Form.SINGLE, a sequence's form).
ONE_PROCESS = Dist()


def from_environment(device: torch.device, backend: str | None = None) -> tuple[Dist, torch.device]:
    """The Dist of a worker started by torchrun (WORLD_SIZE, RANK, LOCAL_RANK), or ONE_PROCESS; and the
    device this rank trains on (cuda:LOCAL_RANK when the job runs on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ONE_PROCESS, device
    dist = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        chosen = backend or ("nccl" if device.type == "cuda" else "gloo")
        torch.distributed.init_process_group(
            chosen, store=_store(), rank=dist.rank, world_size=world, timeout=TIMEOUT,
            device_id=device if chosen == "nccl" else None,
        )  # fmt: skip
    return dist, device


@functools.cache
def _store() -> torch.distributed.Store:
    """The env:// rendezvous store of this worker's job (one per process).

    With the static rendezvous (--nnodes N --node-rank R) torchrun keeps one store for the whole
    job: a prefix of its own for each restart keeps workers restarted by --max-restarts from reading
    the dead workers' addresses. An elastic (c10d) job gets a fresh store for each rendezvous round
    instead (see `launch`), since its machines may have been restarted different numbers of times.
    """
    store, _, _ = next(torch.distributed.rendezvous("env://", timeout=TIMEOUT))
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):
        return store
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return torch.distributed.PrefixStore(f"netspec/attempt_{attempt}", store)


def restarted_worker() -> bool:
    """This worker was restarted by torchrun (--max-restarts) after a failure."""
    return under_torchrun() and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def agreed_resume(resume: str | None, out: str | None) -> str | None:
    """The run folder a worker continues: --resume, or --out once it holds a checkpoint.

    Workers restarted by --max-restarts, and the workers of a machine that joins an elastic job
    later, find the run's checkpoint in --out and continue it. Rank 0 decides for the job; a worker
    that sees otherwise (its machine does not share the run folder) stops with a clear error
    instead of training out of step.
    """
    if resume is not None or out is None:
        return resume
    mine = RunDir(Path(out)).last.exists()
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return out if mine else None
    key = "netspec/continue"
    if os.environ.get("RANK") == "0":
        _store().set(key, "1" if mine else "0")
    decided = _store().get(key) == b"1"  # waits for rank 0
    if decided != mine:
        raise UsageError(
            f"--out {out}: rank 0 {'continues the run in' if decided else 'starts a new run in'} its --out, but this "
            f"machine {'sees no checkpoint' if decided else 'sees a checkpoint'} there; every machine of a job must "
            "see the same run folder (a shared file system, the same path on each)"
        )
    return out if decided else None


def wrap(model: nn.Module, dist: Dist, device: torch.device, sync_bn: bool | None) -> nn.Module:
    """DistributedDataParallel around the model (converting BatchNorm to SyncBatchNorm where it can run)."""
    if not dist.active:
        return model
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if sync_bn and device.type != "cuda":
        raise UsageError("--sync-bn needs CUDA devices (SyncBatchNorm has no CPU kernel); leave it off on CPU")
    if has_bn and (sync_bn if sync_bn is not None else device.type == "cuda"):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def check_batch_size(batch_size: int, dist: Dist) -> None:
    if dist.active and batch_size % dist.world:
        raise UsageError(
            f"batch size {batch_size} does not divide among {dist.world} processes; the spec's batch size is the "
            f"global batch, so give one divisible by {dist.world} (--batch-size)"
        )


def close() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def exit_worker(code: int) -> NoReturn:
    """End a worker process at once, without the interpreter's finalization.

    DDP keeps its gloo process group alive past destroy_process_group (torch 2.14), and a gloo
    thread may release the last collective's tensors while Python finalizes: taking the GIL then
    aborts the process ("terminate called without an active exception", SIGABRT), and the launcher
    reports a finished run as failed. By now every file was written atomically and closed, so only
    the output streams need flushing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --- launching -------------------------------------------------------------------------------------


def launch(worker_args: list[str], options: dict[str, Any], run_dir: Path | None) -> int:
    """Run `netspec <worker_args>` in every worker through torch.distributed.run (torchrun)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    argv = []
    for name in LAUNCH_OPTIONS:
        value = options.get(name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    single_node = str(options.get("nnodes") or 1) == "1"
    if single_node and options.get("rdzv_endpoint") is None and options.get("master_addr") is None:
        argv.append("--standalone")  # a local rendezvous on a free port
    argv += ["-m", "netspec.cli", *worker_args]
    # Share this machine's cores among its workers (torchrun would set 1 thread each, with a warning).
    workers = int(options.get("nproc_per_node") or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    # Each rendezvous round of an elastic job gets a fresh store for its workers: a machine that rejoins
    # after a failure has been restarted fewer times than the others, so no per-restart prefix would match.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    args = get_args_parser().parse_args(argv)
    where = "" if single_node else " and the launch options, on each machine"
    resume = f"; resume with: netspec train --resume {run_dir}{where}" if run_dir else ""
    try:
        run(args)
    except SignalException:  # Ctrl-C or SIGTERM: the workers stopped together and saved a checkpoint
        raise Interrupted(f"interrupted; the workers saved the run's exact state{resume}") from None
    except ChildFailedError as exc:
        failures = sorted(exc.failures.items())
        if all(failure.exitcode == Interrupted.exit_code for _, failure in failures):
            # Every worker here stopped on an interrupt agreed by all ranks: one on another machine.
            raise Interrupted(
                f"the job was interrupted {'elsewhere' if single_node else 'on another machine'}; the workers "
                f"saved the run's exact state{resume}"
            ) from None
        stopped = []
        for rank, failure in failures:
            how = (
                f"signal {failure.signal_name()}"
                if failure.signal_name() != "<N/A>"
                else f"exit code {failure.exitcode}"
            )
            stopped.append(f"rank {rank} ({how})")
        raise WorkerFailed(
            f"a worker stopped: {', '.join(stopped)}; every worker {'was' if single_node else 'on this machine was'} "
            f"stopped, the run folder keeps its last checkpoint{resume}"
        ) from None
    return 0


def rank_prefix() -> str:
    """'[rank 1] ' in the output of a worker other than rank 0."""
    rank = os.environ.get("RANK")
    return f"[rank {rank}] " if rank not in (None, "0") and int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


def is_worker() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def stop_with_launcher() -> None:
    """Have Linux send this worker SIGTERM when its launcher dies (say `kill -9` of one machine's `netspec train`).

    torchrun starts each worker in a session of its own, so nothing else would reach it: it would
    train on unsupervised, and the other machines' launchers would wait for its dead launcher. With
    the signal it stops as on Ctrl-C, together with every other worker, after saving the run's exact
    state; the other machines then stop, or restart and continue without it (--max-restarts).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    # Without prctl, the worker stops when a collective fails instead.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG


def under_torchrun() -> bool:
    """Started by torch's elastic launcher, perhaps as the only worker (an elastic job down to one machine)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ


class TrainingJob:
    """`netspec train ... --nproc-per-node N` in a child process, followed from outside.

    The job goes through the same launcher as a user's `netspec train --nproc-per-node N` (torch's
    elastic launcher); its output lines are passed on, and the epochs that its rank 0 writes to the
    run folder's metrics.json are handed to `on_epoch` as they finish. If `on_epoch` raises (a sweep
    prunes the trial), the job is stopped the way Ctrl-C stops it (its workers save first).
    """

    def __init__(self, train_args: list[str], options: dict[str, Any], report: Callable[[str], None]) -> None:
        self.command = [sys.executable, "-m", "netspec.cli", *train_args]
        for name in LAUNCH_OPTIONS:
            if options.get(name) is not None:
                self.command += [f"--{name.replace('_', '-')}", str(options[name])]
        self.report = report
        self.lines: list[str] = []

    def follow(self, run_dir: Path, on_epoch: Callable[[dict[str, Any]], None], poll: float = 0.5) -> list[dict]:
        """Run the job to its end; its epochs (metrics.json rows). Raises WorkerFailed or Interrupted."""
        process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        reader.start()
        seen = 0
        try:
            while True:
                done = process.poll() is not None
                rows = RunDir(run_dir).read_metrics()
                for row in rows[seen:]:
                    seen += 1
                    on_epoch(row)
                if done:
                    break
                time.sleep(poll)
        except KeyboardInterrupt:  # Ctrl-C reached the job's launcher too (one process group); else pass it on
            _wait(process, grace=5, then=signal.SIGINT)
            raise Interrupted(f"interrupted; the workers saved the run's exact state in {run_dir}") from None
        except BaseException:  # pruned, or the sweep's database gone: stop the job as Ctrl-C does (workers save)
            _wait(process, grace=0, then=signal.SIGINT)
            raise
        finally:
            reader.join(timeout=30)
        if process.returncode == 0:
            return rows
        if process.returncode == Interrupted.exit_code:
            raise Interrupted(f"the job was interrupted; the workers saved the run's exact state in {run_dir}")
        raise WorkerFailed(self._failure(process.returncode))

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            # The epoch lines go on; the error lines are summed up in one by whoever reads the failure, and the
            # launcher's own log lines (W1125 12:00:00.000 ...) and final "run folder:" line say nothing new.
            if not (line.startswith(("run folder: ", "error: ", "[rank ")) or _TORCH_LOG.match(line)):
                self.report(line)

    def _failure(self, code: int) -> str:
        """The message that says why the job failed: a worker's own error (diverged, out of memory, a bad
        setting) rather than the others' "lost contact"; else the launcher's line naming the dead worker."""
        errors = [line.split("error: ", 1)[1] for line in self.lines if line.split("] ", 1)[-1].startswith("error: ")]
        own = [e for e in errors if not e.startswith(("a worker stopped", "lost contact"))]
        launcher = [e for e in errors if e.startswith("a worker stopped")]
        if own:
            return own[0]
        if launcher:
            return launcher[-1]
        return f"the training job ended with exit code {code}: {self.lines[-1] if self.lines else 'no output'}"


_TORCH_LOG = re.compile(r"^[DIWEF]\d{4} \d\d:\d\d:\d\d")


def _wait(process: subprocess.Popen[str], grace: float, then: signal.Signals) -> None:
    """Give a job `grace` seconds to end, then send it `then`; kill it if that does not end it in 120 s."""
    for sig in (then, signal.SIGKILL):
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            process.send_signal(sig)
            grace = 120
    process.wait()
