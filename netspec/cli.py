"""The `netspec` command: a thin layer over the Python API.

Exit codes: 0 success, 2 invalid spec or arguments, 1 anything else
(130 when training is interrupted after saving a checkpoint, 143 at SIGTERM).

One concern, the command line: a small parser function and a small command function per subcommand, in the
order `netspec --help` lists them (the options of settings fields come from the fields: cli_options.py; launching
under torchrun and choosing a batch size: launch.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netspec.cli_options import (
    NetspecParser,
    add_field_option,
    batch_or_dynamic,
    batch_size_or_auto,
    batch_sizes,
    byte_size,
    fraction,
    non_negative_int,
    positive_int,
)
from netspec.errors import NetspecError, Terminated, UsageError


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# --- commands ----------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    from rich.console import Console

    from netspec.compiler import build
    from netspec.shapes import infer_shapes
    from netspec.summary import memory_table, summary_dict, summary_table

    spec = _load(args)
    net = infer_shapes(spec)
    if args.compile:  # torch.compile is lazy: compile for real with one forward pass, so problems show now
        import time

        import torch

        model = build(net, compile=True).eval()
        start = time.perf_counter()
        with torch.no_grad():
            model(torch.zeros(2, *net.input_shape))
        print(f"torch.compile: compiled and ran a forward pass in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    memory, processes = _memory_estimate(args, spec, net)
    if args.json:
        _print_json(summary_dict(net, memory, processes))
        return 0
    console = Console()
    console.print(summary_table(net, memory, width=console.width))
    if memory is not None:
        console.print(memory_table(memory, processes))
    return 0


def _memory_estimate(args: argparse.Namespace, spec: Any, net: Any) -> tuple[Any, int]:
    """The memory model's prediction for `build --batch-size N` (per process with --nproc-per-node), or None."""
    from netspec.memory import settings_estimate

    if args.batch_size is None:
        if any(getattr(args, name) is not None for name in ("amp", "optimizer", "momentum", "nproc_per_node")):
            raise UsageError("--amp, --optimizer, --momentum and --nproc-per-node describe memory: give --batch-size")
        return None, 1
    processes = args.nproc_per_node or 1
    memory = settings_estimate(
        net, spec.train, args.batch_size, processes, amp=args.amp, optimizer=args.optimizer, momentum=args.momentum,
        device=args.device,
    )  # fmt: skip
    return memory, processes


def cmd_schema(args: argparse.Namespace) -> int:
    from netspec.spec import Spec

    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "netspec spec"
    _print_json(schema)
    return 0


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The train-section fields given on the command line (flags named after TrainConfig's fields)."""
    from netspec.config import TrainConfig

    given = {name: getattr(args, name, None) for name in TrainConfig.model_fields}
    overrides = {name: value for name, value in given.items() if value is not None and value is not False}
    if getattr(args, "resize", None) is False:  # --no-resize
        overrides["resize"] = False
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from netspec import distributed, launch
    from netspec.train import train

    extra = {k for k in _train_overrides(args) if k != "epochs"}
    if args.resume is not None and args.overwrite:
        raise UsageError("--resume continues the run in its folder and --overwrite replaces it: give one of them")
    if args.resume is not None and (args.spec is not None or extra or args.set):
        raise UsageError(
            "--resume continues a run with its own spec and settings; give no spec or overrides (but --epochs N, "
            "to extend it)"
        )
    launching = any(getattr(args, name) is not None for name in distributed.LAUNCH_OPTIONS)
    if args.batch_size == "auto":
        launch.choose_batch_size(args, lambda: _load(args), _train_overrides(args), launching)
    elif args.memory_budget is not None or args.memory_fraction is not None:
        raise UsageError("--memory-budget and --memory-fraction go with --batch-size auto")
    if launching and not distributed.is_worker():
        return launch.launch_training(args, lambda: _load(args), _train_overrides(args))
    resume = args.resume
    if distributed.under_torchrun():
        distributed.stop_with_launcher()
        # A worker restarted by --max-restarts, or one on a machine that joined an elastic job late, continues
        # the run in --out.
        resume = distributed.agreed_resume(args.resume, args.out)
    # With --json, stdout carries only the JSON object; the epoch lines go to stderr.
    out = sys.stderr if args.json else sys.stdout
    try:
        result = train(
            _load(args) if args.spec is not None and resume is None else None,
            _train_overrides(args) if resume is None else {"epochs": args.epochs},
            out=args.out if resume is None else None,
            resume=resume,
            report=lambda line: print(line, file=out, flush=True),
            progress=not args.no_progress,
            backend=args.backend,
            sync_bn=args.sync_bn,
            # A worker that torchrun restarts before the run's first checkpoint starts it again in its folder.
            overwrite=args.overwrite or distributed.restarted_worker(),
        )
    except RuntimeError as exc:
        if not distributed.is_worker():
            raise
        # A collective failed: another worker died or hung (torchrun stops this one too).
        first = str(exc).strip().splitlines()[0][:200]
        raise distributed.WorkerFailed(f"lost contact with the other workers ({first})") from None
    finally:
        distributed.close()
    if distributed.rank_prefix():  # only rank 0 of a distributed run reports
        return 0
    if args.json:
        _print_json(result.to_dict())
    else:
        print(f"run folder: {result.run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from netspec.predict import evaluate_run

    if args.checkpoint is not None:  # netspec eval SPEC --checkpoint FILE (the spec given, not the run's)
        args.spec = args.run
        spec, target = _load(args), args.checkpoint
    else:
        if args.set:
            raise UsageError("--set changes a spec: give the spec and --checkpoint, or a run folder alone")
        spec, target = None, args.run
    overrides = {k: v for k, v in _train_overrides(args).items()}
    result, classes, what, task = evaluate_run(target, overrides, split=args.split, spec=spec)
    metrics = {f"{args.split}_{name}": value for name, value in result.metrics.items()}
    if args.json:
        _print_json({**metrics, f"{args.split}_loss": result.loss, "classes": classes, **result.details,
                     "task": task.name})  # fmt: skip
        return 0
    figures = ", ".join(f"{name.replace('_', ' ')} {value:.4f}" for name, value in result.metrics.items())
    print(f"{args.split} {figures}, loss {result.loss:.4f} on {what}")
    title, header, rows = task.table(result, classes)
    table = Table(title=title, title_justify="left")
    table.add_column(header[0])
    for name in header[1:]:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from netspec.predict import predict
    from netspec.tasks import task_named

    results = predict(
        args.run, args.inputs, top_k=args.top, device=args.device or "cpu", skip_bad_files=args.skip_bad_files,
        resize_policy=args.resize_policy, report=lambda line: print(line, file=sys.stderr, flush=True),
        out=args.out,
    )  # fmt: skip
    if args.json:
        _print_json([r.to_dict() for r in results])
        return 0
    task = task_named(results[0].task if results else None)
    table = Table(title_justify="left")
    table.add_column("input", overflow="fold")
    for name in task.prediction_header(args.top):
        table.add_column(name, justify="right" if name.startswith("prob") else "left", overflow="fold")
    for r in results:
        table.add_row(r.input, *task.prediction_cells(r.output, args.top))
    Console().print(table)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from netspec.bench import bench, bench_table
    from netspec.fileio import atomic_write_json

    console = Console(stderr=args.json)
    report = bench(
        _load(args),
        devices=args.device,
        batch_sizes=args.batch_sizes,
        modes=args.modes,
        compile=args.compile,
        compile_mode=args.compile_mode,
        amp=args.amp,
        channels_last=True if args.channels_last else None,
        warmup=args.warmup,
        steps=args.steps,
        repeats=args.repeats,
        end_to_end=args.end_to_end,
        train_overrides={k: v for k, v in (("dataset", args.dataset), ("data_root", args.data_root)) if v},
        memory_budget=args.memory_budget,
        memory_fraction=args.memory_fraction or 0.9,
        on_message=lambda line: console.print(f"[dim]{line}[/dim]"),
        on_result=lambda r: console.print(
            f"[dim]{r.device} {r.mode} batch {r.batch_size} {r.variant.label}: "
            + (f"{r.examples_per_sec:,.0f} examples/sec" if r.examples_per_sec else r.status)
            + (" (unstable)" if r.stable is False else "")
            + "[/dim]"
        ),
    )
    if args.out:
        atomic_write_json(Path(args.out), report.to_dict())
    if args.json:
        _print_json(report.to_dict())
    else:
        console.print(bench_table(report, console.width))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from netspec.exporter import export, is_run_path

    if is_run_path(Path(args.spec)) and args.set:
        raise UsageError(f"{args.spec} is a run: it is exported with its own spec and weights; give no --set")
    spec = args.spec if is_run_path(Path(args.spec)) else _load(args)
    result = export(
        spec, args.format, checkpoint=args.checkpoint, out=args.out, batch=args.batch, opset=args.opset,
        preprocess=not args.no_preprocess,
    )  # fmt: skip
    if args.json:
        _print_json(result.to_dict())
        return 0
    print(f"wrote {result.path} ({result.format}; {', '.join(result.notes)})")
    if result.weights_path is not None:
        print(f"wrote {result.weights_path} (the checkpoint's state_dict; the file's docstring shows how to load it)")
    print(
        f"checked: max abs difference {result.max_abs_diff:.2g} from the netspec model on a batch of {result.check_batch}"
    )
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    from netspec.diagram import draw

    path = draw(_load(args), args.out, style=args.style, detail=args.detail)
    print(f"wrote {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console

    from netspec.sweep import make_plan, results_table, sweep

    # With --json, stdout carries only the JSON object; progress goes to stderr.
    stream = sys.stderr if args.json else sys.stdout
    report = lambda line: print(line, file=stream, flush=True)  # noqa: E731
    if args.resume is not None:
        if args.specs or args.grid or _train_overrides(args) or args.set or args.overwrite:
            raise UsageError("--resume continues a sweep with its own specs and settings; give no specs or options")
        result = sweep(resume=args.resume, report=report)
    else:
        plan = make_plan(
            args.specs,
            args.grid or [],
            sampler=args.sampler,
            trials=args.trials,
            epochs=args.epochs,
            prune=False if args.no_prune else None,
            seed=args.sweep_seed,
            storage=args.storage,
            train_overrides={k: v for k, v in _train_overrides(args).items() if k != "epochs"},
            variables=_assignments(args.set),
            nproc_per_node=args.nproc_per_node,
        )
        result = sweep(plan, out=args.out, report=report, overwrite=args.overwrite)
    if args.json:
        _print_json(result.to_dict())
    else:
        Console(width=None if sys.stdout.isatty() else 150).print(results_table(result))
        written = f" ({', '.join(result.files)})" if result.files else ""
        print(f"sweep folder: {result.sweep_dir}{written}")
    return 0


def _add_memory_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--memory-budget", type=byte_size, metavar="SIZE",
        help="for batch size auto: the memory a process may use (e.g. 8GiB); needed on CPU",
    )  # fmt: skip
    g.add_argument(
        "--memory-fraction", type=fraction, metavar="F",
        help="for batch size auto on CUDA: the share of the device's free memory to fill (default: 0.9)",
    )  # fmt: skip


def _assignments(pairs: list[str] | None) -> dict[str, Any]:
    """`--set width=64 --set act=relu` -> {"width": 64, "act": "relu"}."""
    from netspec.spec import parse_value

    values: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set {pair}: write NAME=VALUE, e.g. --set width=64")
        try:
            values[name.strip()] = parse_value(text)
        except ValueError as exc:
            raise UsageError(f"--set {pair}: {exc}") from None
    return values


def _load(args: argparse.Namespace) -> Any:
    """The spec named on the command line, with its `--set` variables."""
    from netspec.spec import load_spec

    return load_spec(args.spec, variables=_assignments(getattr(args, "set", None)))


def _add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override a spec variable from the spec's vars: section (repeatable), e.g. --set width=64",
    )


def _add_data_options(g: argparse._ArgumentGroup, auto_batch: bool = False) -> None:
    """The train section's data and device fields, as options (config.TrainConfig says what each is)."""
    from netspec.config import TrainConfig

    def option(name: str, **kwargs: Any) -> None:
        add_field_option(g, TrainConfig, name, **kwargs)

    option("data", metavar="PATH")
    option("label", metavar="COLUMN[,COLUMN...]")
    option("task")
    option("skip_bad_files")
    option("ignore_index", metavar="VALUE")
    option("dataset", note="default: the spec's train section")
    option("data_root", show_default=True)
    option("download")
    option(
        "resize", action=argparse.BooleanOptionalAction, default=None,
        help="resize built-in images to the spec's input size on the fly (as d2l's); --no-resize turns a spec's "
        "resize: true off (--data images are always resized to the spec's input)",
    )  # fmt: skip
    option("val_split", metavar="F", show_default=True)
    option("test_split", metavar="F", show_default=True)
    option("device", show_default=True)
    if auto_batch:
        option(
            "batch_size", type=batch_size_or_auto,
            help="training batch size, or auto: the largest that fits in memory (see --memory-budget)",
        )  # fmt: skip
        _add_memory_options(g)
    else:
        option("batch_size")
    option("test_batch_size", show_default=True)
    option("seed", show_default=True)
    option("synthetic_size")


def _add_recipe_options(g: argparse._ArgumentGroup) -> None:
    """The train section's recipe fields, as options (config.TrainConfig says what each is)."""
    from netspec.config import TrainConfig

    def option(name: str, **kwargs: Any) -> None:
        add_field_option(g, TrainConfig, name, **kwargs)

    option("epochs", note="with --resume: extend the run to N")
    for name in ("lr", "optimizer", "momentum", "nesterov", "weight_decay", "scheduler", "step_size", "gamma",
                 "init", "label_smoothing", "grad_clip"):  # fmt: skip
        option(name)
    option("augment", action="store_true")
    for name in ("amp", "compile", "channels_last", "patience"):
        option(name)
    option("monitor", show_default=True)
    option("loss")
    option("threshold", metavar="P")
    option("init_from", metavar="FILE|torchvision:NAME|timm:NAME")
    option("skip_mismatched")
    option("freeze", metavar="PREFIX", note="repeatable, e.g. --freeze features")


def _parser(sub: Any, name: str, help: str, examples: list[str]) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def make_parser() -> argparse.ArgumentParser:
    parser = NetspecParser(
        prog="netspec",
        description="Declarative model specs: build, train, benchmark, sweep, export and draw.",
        epilog="examples:\n  netspec build specs/lenet.yaml\n  netspec train specs/lenet.yaml --dataset mnist\n"
        "  netspec <command> --help   (each command's options and examples)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"netspec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=NetspecParser, metavar="command")
    _build_parser(sub)
    _schema_parser(sub)
    _train_parser(sub)
    _eval_parser(sub)
    _predict_parser(sub)
    _bench_parser(sub)
    _sweep_parser(sub)
    _export_parser(sub)
    _draw_parser(sub)
    return parser


def _build_parser(sub: Any) -> None:
    from netspec.config import MemoryDevice, TrainConfig, choices

    p = _parser(
        sub,
        "build",
        "validate a spec and show its layers, shapes, parameters, MACs and (with --batch-size) memory",
        [
            "netspec build specs/lenet.yaml",
            "netspec build specs/d2l_googlenet.yaml --json",
            "netspec build x.yaml --set width=64",
            "netspec build specs/resnet18.yaml --batch-size 128 --amp bf16 --optimizer adam",
        ],
    )
    p.add_argument("spec", help="path to a YAML spec")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--compile", action="store_true", help="also compile it with torch.compile (one forward pass)")
    _add_set_option(p)
    g = p.add_argument_group("memory (predicted from the shapes; see docs/explanation/memory.md)")
    g.add_argument(
        "--batch-size", type=positive_int,
        help="predict the memory of training at this (global) batch size: a 'saved' column and a memory summary",
    )  # fmt: skip
    add_field_option(g, TrainConfig, "amp", note="default: the spec's train section")
    add_field_option(g, TrainConfig, "optimizer", note="default: the spec's")
    add_field_option(g, TrainConfig, "momentum", note="default: the spec's; > 0 keeps a momentum buffer")
    g.add_argument(
        "--device", choices=choices(MemoryDevice), help="whose kernels' rules to follow (default: this machine's)"
    )
    g.add_argument(
        "--nproc-per-node", type=positive_int,
        help="processes sharing the batch (DDP): the figures are per process, at batch-size / N",
    )  # fmt: skip
    p.set_defaults(func=cmd_build)


def _schema_parser(sub: Any) -> None:
    p = _parser(sub, "schema", "print the JSON Schema of the spec language (for editors)",
                ["netspec schema > netspec.schema.json"])  # fmt: skip
    p.set_defaults(func=cmd_schema)


def _train_parser(sub: Any) -> None:
    p = _parser(
        sub,
        "train",
        "train a spec on its dataset; writes a run folder",
        [
            "netspec train specs/lenet.yaml --dataset mnist --data-root ../shared/data",
            "netspec train specs/mlp.yaml --epochs 2 --lr 0.03 --json",
            "netspec train --resume runs/lenet-20261124-120000",
            "netspec train specs/d2l_resnet18.yaml --batch-size auto --memory-fraction 0.8  # CUDA",
        ],
    )
    p.add_argument("spec", nargs="?", help="path to a YAML spec (omit with --resume)")
    g = p.add_argument_group("data and device")
    _add_data_options(g, auto_batch=True)
    g = p.add_argument_group("the recipe (overrides of the spec's train section)")
    _add_recipe_options(g)
    _add_set_option(g)
    g = p.add_argument_group("output")
    g.add_argument("--out", help="run folder (default: runs/<name>-<timestamp>)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    g.add_argument(
        "--overwrite", action="store_true", help="replace the run that --out holds (without it, such an --out is refused)"
    )
    g.add_argument("--json", action="store_true", help="print the final result as one JSON object")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("several processes and machines (torch.distributed, launched by torchrun's engine)")
    g.add_argument("--nproc-per-node", type=positive_int, help="worker processes on this machine (one per GPU)")
    g.add_argument("--nnodes", help="number of machines, or MIN:MAX for an elastic job (default: 1)")
    g.add_argument("--node-rank", type=non_negative_int, help="this machine's rank among --nnodes (static rendezvous)")
    g.add_argument("--master-addr", help="address of the rank-0 machine (static rendezvous)")
    g.add_argument("--master-port", type=positive_int, help="port on the rank-0 machine (static rendezvous)")
    g.add_argument("--rdzv-endpoint", help="HOST:PORT of a c10d rendezvous, instead of --master-addr/--node-rank")
    g.add_argument("--rdzv-backend", help="rendezvous backend (static or c10d; default: torchrun's)")
    g.add_argument("--rdzv-id", help="job id shared by the machines of one c10d rendezvous (default: none)")
    g.add_argument(
        "--rdzv-conf", metavar="KEY=VALUE,...",
        help="c10d rendezvous settings, e.g. last_call_timeout=5,join_timeout=600 (seconds)",
    )  # fmt: skip
    g.add_argument("--local-addr", help="this machine's address for the others (default: its host name's)")
    g.add_argument("--max-restarts", type=non_negative_int, help="restart the workers this many times after a failure")
    g.add_argument("--backend", choices=("gloo", "nccl"), help="default: nccl when every worker has a GPU, else gloo")
    g.add_argument(
        "--sync-bn", action=argparse.BooleanOptionalAction, default=None,
        help="SyncBatchNorm across workers (default: on with CUDA; needs CUDA)",
    )  # fmt: skip
    p.set_defaults(func=cmd_train)


def _eval_parser(sub: Any) -> None:
    from netspec.config import TrainConfig

    p = _parser(
        sub,
        "eval",
        "accuracy, loss and confusion matrix of a finished run on its own test split",
        [
            "netspec eval runs/lenet-20261124-120000",
            "netspec eval runs/shapes --split val --json",
            "netspec eval specs/lenet.yaml --checkpoint runs/lenet-.../best.pt   # with another spec file",
        ],
    )
    p.add_argument("run", metavar="RUN_OR_SPEC", help="a run folder (or its best.pt); with --checkpoint, the spec")
    p.add_argument("--checkpoint", help="a checkpoint to evaluate with the spec given (instead of a run folder)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="which split (default: test)")
    g = p.add_argument_group("data and device (default: the run's own)")
    g.add_argument("--data", metavar="PATH", help="the run's folder or table, if it has moved")
    add_field_option(
        g, TrainConfig, "dataset", help="a built-in dataset, if not the run's (with a spec and --checkpoint)"
    )
    g.add_argument("--data-root", help="folder holding the built-in datasets, if not the run's")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    g.add_argument("--test-batch-size", "--batch-size", dest="test_batch_size", type=positive_int,
                   help="evaluation batch size (default: the run's, 1024)")  # fmt: skip
    _add_set_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval, spec=None)


def _predict_parser(sub: Any) -> None:
    p = _parser(
        sub,
        "predict",
        "classify images or table rows with a finished run (its spec, classes and normalization)",
        [
            "netspec predict runs/shapes-20261124-120000 cat.png dog.jpg",
            "netspec predict runs/shapes photos/ --top 1 --json",
            "netspec predict runs/iris new_rows.csv",
        ],
    )
    p.add_argument("run", metavar="RUN", help="a run folder (its best.pt is used) or a checkpoint file")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or a CSV table")
    p.add_argument("--top", type=positive_int, default=3, help="how many classes to show per input (default: 3)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="skip unreadable images (each named on stderr) and classify the others")  # fmt: skip
    p.add_argument("--resize-policy", choices=("crop", "pad", "stretch"), default="crop",
                   help="how an image of another shape is fitted to the run's input: crop (default, as training "
                   "does: shorter side scaled, centre cropped), pad (longer side scaled, black borders) or stretch")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--out", metavar="DIR",
                   help="segmentation: write each input's mask (a palette PNG at the input's size) into DIR")  # fmt: skip
    p.set_defaults(func=cmd_predict)


def _bench_parser(sub: Any) -> None:
    from netspec.config import BenchConfig

    p = _parser(
        sub,
        "bench",
        "measure training and inference examples/sec, eager and compiled",
        [
            "netspec bench specs/lenet.yaml --device cpu --batch-sizes 64,256,1024 --compile both",
            "netspec bench specs/resnet_small.yaml --device cuda --amp bf16 --channels-last --json --out r.json",
            "netspec bench specs/lenet.yaml --end-to-end --dataset mnist --data-root ../shared/data",
            "netspec bench specs/resnet_small.yaml --device cpu --batch-sizes 32,auto --memory-budget 2GiB",
        ],
    )
    p.add_argument("spec", help="path to a YAML spec")
    g = p.add_argument_group("what to measure")
    add_field_option(
        g, BenchConfig, "devices", "--device", help="cpu, cuda, cuda:N (repeatable; default: every available)"
    )
    add_field_option(
        g, BenchConfig, "batch_sizes", type=batch_sizes, metavar="N,N,...",
        help="batch sizes to sweep, e.g. 64,256,1024; auto: the largest whose training step fits (see --memory-*)",
    )  # fmt: skip
    add_field_option(g, BenchConfig, "modes", type=lambda t: t.split(","), metavar="train,infer")
    add_field_option(g, BenchConfig, "compile")
    g.add_argument(
        "--compile-mode",
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile mode (reduce-overhead uses CUDA graphs)",
    )
    add_field_option(g, BenchConfig, "amp")
    add_field_option(g, BenchConfig, "channels_last")
    _add_set_option(g)
    _add_memory_options(g)
    g = p.add_argument_group("timing")
    for name in ("warmup", "steps", "repeats"):
        add_field_option(g, BenchConfig, name, show_default=True)
    g.add_argument("--end-to-end", action="store_true", help="time a real `netspec train` epoch, data path included")
    g.add_argument("--dataset", help="dataset for --end-to-end (default: the spec's)")
    g.add_argument("--data-root", help="dataset folder for --end-to-end")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.add_argument("--out", help="also write the JSON to this file")
    p.set_defaults(func=cmd_bench)


def _sweep_parser(sub: Any) -> None:
    from netspec.config import SweepConfig

    p = _parser(
        sub,
        "sweep",
        "train a spec under many settings (a grid or an Optuna sampler) and compare the trials",
        [
            "netspec sweep specs/mlp.yaml --grid lr=0.1,0.01,0.001 --grid batch_size=32,64,128 --epochs 1",
            "netspec sweep specs/cifar_net*.yaml --dataset cifar2 --epochs 10",
            "netspec sweep specs/mlp.yaml --grid lr=1e-4..1e-1:log --sampler tpe --trials 20",
            "netspec sweep --resume runs/sweep-mlp-20261124-120000",
            "netspec sweep specs/mlp.yaml --grid lr=0.1,0.01 --storage postgresql://host/db  # on several machines",
        ],
    )
    p.add_argument("specs", nargs="*", metavar="SPEC", help="one spec, or several to compare (omit with --resume)")
    g = p.add_argument_group("the search")
    add_field_option(
        g, SweepConfig, "grid", action="append", metavar="KEY=VALUES",
        help="a train setting or spec variable and its values: lr=0.1,0.01 (a list) or lr=1e-4..1e-1:log, "
        "width=16..128 (a range, for tpe/random); repeatable",
    )  # fmt: skip
    add_field_option(g, SweepConfig, "sampler", show_default=True)
    add_field_option(g, SweepConfig, "trials")
    add_field_option(g, SweepConfig, "prune", "--no-prune", help="never stop a trial early (default: median pruning)")
    add_field_option(g, SweepConfig, "seed", "--sweep-seed", show_default=True)
    g = p.add_argument_group("every trial (overrides of the spec's train section)")
    _add_data_options(g)
    _add_recipe_options(g)
    _add_set_option(g)
    g = p.add_argument_group("output and scale-out")
    g.add_argument("--out", metavar="DIR", help="sweep folder (default: runs/sweep-<names>-<timestamp>)")
    g.add_argument("--resume", metavar="DIR", help="finish a sweep that was stopped or killed")
    g.add_argument(
        "--overwrite", action="store_true", help="replace the sweep that --out holds (without it, such an --out is refused)"
    )
    add_field_option(g, SweepConfig, "storage", metavar="URL")
    g.add_argument(
        "--nproc-per-node", type=positive_int, metavar="N",
        help="run each trial as a torch.distributed job of N processes on this machine (as netspec train "
        "--nproc-per-node N; the batch size is the global batch)",
    )  # fmt: skip
    g.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=cmd_sweep)


def _export_parser(sub: Any) -> None:
    p = _parser(
        sub,
        "export",
        "export a spec or a trained run as ONNX, torch.export (.pt2) or a plain PyTorch file, checked against the "
        "model",
        [
            "netspec export runs/lenet --format onnx   # the run's spec, best.pt and normalization",
            "netspec export specs/lenet.yaml --format onnx",
            "netspec export specs/lenet.yaml --format python --checkpoint runs/lenet-.../best.pt --out lenet.py",
            "netspec export specs/resnet_small.yaml --format pt2 --batch 8",
        ],
    )
    p.add_argument("spec", help="a YAML spec, or a run folder (its spec, best.pt else last.pt, and normalization)")
    p.add_argument("--format", required=True, choices=("onnx", "pt2", "python"), help="what to write")
    p.add_argument(
        "--checkpoint", help="a run's best.pt or last.pt: export its trained weights (with a run folder: instead of "
        "best.pt)",
    )  # fmt: skip
    p.add_argument("--out", help="file or folder to write (default: <name>.onnx / .pt2 / .py here)")
    p.add_argument(
        "--batch", type=batch_or_dynamic, default="dynamic", help="'dynamic' (default: any batch size) or a fixed batch size"
    )
    p.add_argument("--opset", type=positive_int, help="ONNX opset version (default: the exporter's)")
    p.add_argument(
        "--no-preprocess", action="store_true",
        help="with --checkpoint: ONNX/pt2 take inputs already normalized, instead of raw pixels or features",
    )  # fmt: skip
    _add_set_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)


def _draw_parser(sub: Any) -> None:
    p = _parser(
        sub,
        "draw",
        "draw the network as a picture (shapes on the edges, branches side by side, long networks in columns)",
        ["netspec draw specs/lenet.yaml --out lenet.png", "netspec draw specs/resnet_small.yaml --out r.pdf --detail"],
    )
    p.add_argument("spec", help="path to a YAML spec")
    p.add_argument(
        "--out", required=True, help="the picture to write; its suffix picks the format: .png, .svg, .pdf, .jpg, ..."
    )
    p.add_argument(
        "--style", choices=("graph", "blocks"), default="graph",
        help="graph: a box per layer (default); blocks: a box per top-level entry",
    )  # fmt: skip
    p.add_argument("--detail", action="store_true", help="expand block uses and repeats into their layers")
    _add_set_option(p)
    p.set_defaults(func=cmd_draw)


def _version() -> str:
    from netspec import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    # SIGTERM outside a training loop stops with a line instead of silently; the caller's handler comes back
    # afterwards (main is also called in-process, by tests and scripts).
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        code = _run(args)
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)
    if "WORLD_SIZE" in os.environ:  # perhaps a torchrun worker (which has torch loaded anyway)
        from netspec import distributed

        if distributed.is_worker():
            distributed.exit_worker(code)
    return code


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _with_spec_warnings(args: argparse.Namespace) -> Any:
    """Run the command, printing each SpecWarning (a forgotten flatten) once on stderr as `warning: ...`."""
    import warnings

    from netspec.errors import SpecWarning

    shown: set[str] = set()
    original = warnings.showwarning

    def show(message: Any, category: type, *rest: Any, **kwargs: Any) -> None:
        if not issubclass(category, SpecWarning):
            original(message, category, *rest, **kwargs)
        elif str(message) not in shown:
            shown.add(str(message))
            if os.environ.get("RANK", "0") == "0" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
                print(f"warning: {message}", file=sys.stderr, flush=True)  # once a job: rank 0 says it

    with warnings.catch_warnings():
        warnings.simplefilter("always", SpecWarning)
        warnings.showwarning = show
        return args.func(args)


def _run(args: argparse.Namespace) -> int:
    """The command's exit code; every error becomes one line on stderr."""
    try:
        return int(_with_spec_warnings(args) or 0)
    except NetspecError as exc:
        from netspec.distributed import rank_prefix

        print(f"{rank_prefix()}error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        by = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        print(f"error: interrupted by {by} (files are written whole or not at all)", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: say so in one line, traceback only on request
        if os.environ.get("NETSPEC_DEBUG"):
            raise
        print(
            f"error: internal error: {type(exc).__name__}: {exc} (set NETSPEC_DEBUG=1 for a traceback)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
