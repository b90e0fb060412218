"""What `netspec train` settles before it trains: `--batch-size auto`, and launching N workers under torchrun.

Both rewrite the command line the workers get (a chosen batch size replaces `auto`; the launcher's own
options are taken out), so both live here beside that rewriting; cli.py only parses and prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netspec.errors import UsageError


def choose_batch_size(
    args: argparse.Namespace, load_spec: Callable[[], Any], overrides: dict[str, Any], launching: bool
) -> None:
    """`train --batch-size auto`: the largest batch whose predicted peak fits the budget, confirmed by a real step
    (memory.auto_batch_size). With --nproc-per-node the figure is per process and the global batch N times it.
    Sets args.batch_size and args.argv (what a launched worker is given) to the number chosen."""
    from netspec.device import resolve_device
    from netspec.memory import auto_batch_size, step_settings
    from netspec.shapes import infer_shapes
    from netspec.train import resolve_config

    if args.spec is None:
        raise UsageError("--batch-size auto needs a spec")
    if args.nnodes not in (None, "1"):
        raise UsageError("--batch-size auto chooses on one machine; with --nnodes give every machine the same number")
    processes = (args.nproc_per_node or 1) if launching else 1
    spec = load_spec()
    cfg = resolve_config(spec, {k: v for k, v in overrides.items() if k != "batch_size"})
    choice = auto_batch_size(
        infer_shapes(spec),
        resolve_device(cfg.device),
        **step_settings(cfg),
        budget=args.memory_budget,
        fraction=args.memory_fraction or 0.9,
        processes=processes,
    )
    print(choice.describe() + (f"; global batch {choice.batch_size * processes}" if processes > 1 else ""),
          file=sys.stderr if args.json else sys.stdout, flush=True)  # fmt: skip
    args.batch_size = choice.batch_size * processes
    args.argv = [*without_options(args.argv, ["--batch-size", "--memory-budget", "--memory-fraction"]),
                 "--batch-size", str(args.batch_size)]  # fmt: skip
    args.memory_budget = args.memory_fraction = None


def launch_training(args: argparse.Namespace, load_spec: Callable[[], Any], overrides: dict[str, Any]) -> int:
    """`netspec train ... --nproc-per-node N`: the same command in N workers, through torch.distributed.run."""
    from netspec import distributed, runfolder
    from netspec.train import new_run_dir, resolve_config

    worker_args = without_options(args.argv, [f"--{n.replace('_', '-')}" for n in distributed.LAUNCH_OPTIONS])
    run_dir = Path(args.resume) if args.resume else None
    nodes = int(args.nnodes) if args.nnodes and str(args.nnodes).isdigit() else None
    low, _, high = str(args.nnodes or 1).partition(":")
    joins_late = bool(high) and low != high  # an elastic job: a machine may join while it runs
    if run_dir is None and args.out is not None and not joins_late:
        # The workers would continue a run in --out (that is how a restarted worker picks its run up): refuse
        # here as a single process does, unless --overwrite.
        runfolder.check_new(Path(args.out), "run", overwrite=args.overwrite)
    if run_dir is None and args.out is None and str(args.nnodes or 1) != "1":
        raise UsageError(
            f"--nnodes {args.nnodes}: a job across machines needs --out RUN_DIR, the same folder on every machine "
            "(on a file system they share, so that any of them can write and resume it)"
        )
    if run_dir is None:
        spec = load_spec()
        world = (args.nproc_per_node or 1) * (nodes or 1)
        distributed.check_batch_size(resolve_config(spec, overrides).batch_size, distributed.Dist(0, world))
        # The launcher picks the run folder, so that every worker (and this message) names the same one.
        run_dir = new_run_dir(spec.name, args.out)
        if args.out is None:
            worker_args += ["--out", str(run_dir)]
    options = {name: getattr(args, name) for name in distributed.LAUNCH_OPTIONS}
    return distributed.launch(worker_args, options, run_dir)


def without_options(argv: list[str], names: list[str]) -> list[str]:
    """argv with the given options (and their values) taken out."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in names:
            skip = "=" not in token
            continue
        kept.append(token)
    return kept
