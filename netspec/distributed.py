"""Training across processes and machines: torch.distributed set-up, sharding, reductions, launching.

netspec never launches or schedules processes itself: `netspec train --nproc-per-node N` hands
the command to torch's elastic launcher (`torch.distributed.run`, what `torchrun` runs), and
each worker finds its rank in the environment the launcher sets. The trainer stays the plain
single-process loop; in a worker it is given a `Dist` whose methods are the few collective
steps it needs (sums of metrics, a shared stop decision, rank 0's run folder).
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from netspec.errors import Interrupted, NetspecError, UsageError

# A collective that waits longer than this (a peer died or hangs) ends the job instead of hanging it.
TIMEOUT = datetime.timedelta(seconds=int(os.environ.get("NETSPEC_DIST_TIMEOUT", "120")))
# Launcher options that `netspec train` passes on to torch.distributed.run.
LAUNCH_OPTIONS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port", "rdzv_endpoint",
                  "rdzv_backend", "max_restarts")  # fmt: skip


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


SINGLE = Dist()


def from_environment(device: torch.device, backend: str | None = None) -> tuple[Dist, torch.device]:
    """The Dist of a worker started by torchrun (WORLD_SIZE, RANK, LOCAL_RANK), or SINGLE; and the
    device this rank trains on (cuda:LOCAL_RANK when the job runs on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device
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


def _store() -> torch.distributed.Store:
    """The env:// rendezvous store, under a prefix of its own for each restart of the workers.

    torchrun keeps one store for the whole job: without the prefix, workers restarted by
    --max-restarts would read the dead workers' addresses and fail to connect.
    """
    store, _, _ = next(torch.distributed.rendezvous("env://", timeout=TIMEOUT))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return torch.distributed.PrefixStore(f"netspec/attempt_{attempt}", store)


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
    args = get_args_parser().parse_args(argv)
    try:
        run(args)
    except SignalException:  # Ctrl-C or SIGTERM: the workers stopped together and saved a checkpoint
        resume = f"; resume with: netspec train --resume {run_dir}" if run_dir else ""
        raise Interrupted(f"interrupted; the workers saved the run's exact state{resume}") from None
    except ChildFailedError as exc:
        failures = []
        for rank, failure in sorted(exc.failures.items()):
            how = (
                f"signal {failure.signal_name()}"
                if failure.signal_name() != "<N/A>"
                else f"exit code {failure.exitcode}"
            )
            failures.append(f"rank {rank} ({how})")
        resume = f"; resume with: netspec train --resume {run_dir}" if run_dir else ""
        raise WorkerFailed(
            f"a worker stopped: {', '.join(failures)}; every worker was stopped, the run folder keeps its last "
            f"checkpoint{resume}"
        ) from None
    return 0


def rank_prefix() -> str:
    """'[rank 1] ' in the output of a worker other than rank 0."""
    rank = os.environ.get("RANK")
    return f"[rank {rank}] " if rank not in (None, "0") and int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


def is_worker() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def restarted() -> bool:
    """True in a worker that torchrun restarted (--max-restarts): it should resume, not start over."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
