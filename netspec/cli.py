"""The `netspec` command: a thin layer over the Python API.

Exit codes: 0 success, 2 invalid spec or arguments, 1 anything else
(130 when training is interrupted after saving a checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# --- commands ----------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    from rich.console import Console

    from netspec.compiler import build
    from netspec.shapes import infer_shapes
    from netspec.summary import summary_dict, summary_table

    net = infer_shapes(args.spec)
    if args.compile:  # torch.compile is lazy: compile for real with one forward pass, so problems show now
        import time

        import torch

        model = build(net, compile=True).eval()
        start = time.perf_counter()
        with torch.no_grad():
            model(torch.zeros(2, *net.input_shape))
        print(f"torch.compile: compiled and ran a forward pass in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.json:
        _print_json(summary_dict(net))
    else:
        Console().print(summary_table(net))
    return 0


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
    return {name: value for name, value in given.items() if value not in (None, False)}


def cmd_train(args: argparse.Namespace) -> int:
    from netspec.train import train

    if args.resume is not None and (args.spec is not None or _train_overrides(args)):
        raise UsageError("--resume continues a run with its own spec and settings; give no spec or overrides")
    # With --json, stdout carries only the JSON object; the epoch lines go to stderr.
    out = sys.stderr if args.json else sys.stdout
    result = train(
        args.spec,
        _train_overrides(args),
        out=args.out,
        resume=args.resume,
        report=lambda line: print(line, file=out, flush=True),
        progress=not args.no_progress,
    )
    if args.json:
        _print_json(result.to_dict())
    else:
        print(f"run folder: {result.run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from netspec.train import evaluate_checkpoint

    accuracy, confusion, classes = evaluate_checkpoint(args.spec, args.checkpoint, _train_overrides(args))
    if args.json:
        _print_json({"test_accuracy": accuracy, "classes": classes, "confusion": confusion.tolist()})
        return 0
    print(f"test accuracy {accuracy:.4f} on {int(confusion.sum())} images")
    table = Table(title="confusion matrix (rows: true class, columns: predicted)", title_justify="left")
    table.add_column("")
    for name in classes:
        table.add_column(name[:8], justify="right")
    for name, row in zip(classes, confusion.tolist(), strict=True):
        table.add_row(name, *map(str, row))
    Console().print(table)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from netspec.bench import bench, bench_table
    from netspec.fileio import atomic_write_json

    console = Console(stderr=args.json)
    report = bench(
        args.spec,
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
        on_result=lambda r: console.print(
            f"[dim]{r.device} {r.mode} batch {r.batch_size} {r.variant.label}: "
            + (f"{r.examples_per_sec:,.0f} examples/sec" if r.examples_per_sec else r.status)
            + "[/dim]"
        ),
    )
    if args.out:
        atomic_write_json(Path(args.out), report.to_dict())
    if args.json:
        _print_json(report.to_dict())
    else:
        console.print(bench_table(report))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from netspec.exporter import export

    result = export(
        args.spec, args.format, checkpoint=args.checkpoint, out=args.out, batch=args.batch, opset=args.opset
    )
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

    path = draw(args.spec, args.out, style=args.style, detail=args.detail)
    print(f"wrote {path}")
    return 0


def _batch(text: str) -> int | str:
    return "dynamic" if text == "dynamic" else _positive_int(text)


def _int_list(text: str) -> list[int]:
    values = [_positive_int(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list of whole numbers")
    return values


def _parse_number(text: str, cast: type, noun: str, minimum: float, inclusive: bool) -> Any:
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
    if value < minimum or (not inclusive and value == minimum):
        bound = f"at least {minimum}" if inclusive else f"greater than {minimum}"
        raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _parse_number(text, int, "a whole number", 1, inclusive=True)


def _positive_float(text: str) -> float:
    return _parse_number(text, float, "a number", 0, inclusive=False)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from netspec.config import DATASETS

    g = p.add_argument_group("overrides of the spec's train section")
    g.add_argument("--dataset", choices=DATASETS)
    g.add_argument("--data-root", help="folder holding the dataset in torchvision's layout")
    g.add_argument("--download", action="store_true", help="download the dataset if missing (needs internet)")
    g.add_argument("--device", help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    g.add_argument("--batch-size", type=_positive_int)
    g.add_argument("--seed", type=int)
    g.add_argument(
        "--resize", action="store_true", help="resize images to the spec's input size on the fly (as d2l's resize=)"
    )


# --- argument parsing --------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="netspec", description="Declarative model specs: build, train and benchmark.")
    parser.add_argument("--version", action="version", version=f"netspec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("build", help="validate a spec and show its layers, shapes, parameters and MACs")
    p.add_argument("spec", help="path to a YAML spec")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--compile", action="store_true", help="also compile it with torch.compile (one forward pass)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("schema", help="print the JSON Schema of the spec language (for editors)")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("train", help="train a spec on its dataset; writes a run folder")
    p.add_argument("spec", nargs="?", help="path to a YAML spec (omit with --resume)")
    _add_train_options(p)
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--lr", type=_positive_float)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    p.add_argument("--scheduler", choices=("none", "step", "cosine", "onecycle"))
    p.add_argument("--amp", choices=("none", "bf16", "fp16"))
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--out", help="run folder (default: runs/<name>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print the final result as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="test accuracy and confusion matrix of a saved checkpoint")
    p.add_argument("spec", help="path to the YAML spec the checkpoint was trained from")
    p.add_argument("--checkpoint", required=True, help="a last.pt or best.pt from a run folder")
    _add_train_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="measure training and inference examples/sec, eager and compiled")
    p.add_argument("spec", help="path to a YAML spec")
    p.add_argument("--device", action="append", help="cpu, cuda, cuda:N (repeatable; default: every available)")
    p.add_argument("--batch-sizes", type=_int_list, metavar="N,N,...", help="sweep, e.g. 64,256,1024")
    p.add_argument("--modes", type=lambda t: t.split(","), metavar="train,infer")
    p.add_argument("--compile", choices=("off", "on", "both"))
    p.add_argument(
        "--compile-mode",
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile mode (reduce-overhead uses CUDA graphs)",
    )
    p.add_argument("--amp", choices=("none", "bf16", "fp16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--warmup", type=int)
    p.add_argument("--steps", type=_positive_int, help="steps per timed repeat")
    p.add_argument("--repeats", type=_positive_int)
    p.add_argument("--end-to-end", action="store_true", help="time a real `netspec train` epoch, data path included")
    p.add_argument("--dataset", help="dataset for --end-to-end (default: the spec's)")
    p.add_argument("--data-root", help="dataset folder for --end-to-end")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write the JSON to this file")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "export",
        help="export a spec as ONNX, torch.export (.pt2) or a plain PyTorch file, checked against the model",
        epilog="examples:\n  netspec export specs/lenet.yaml --format onnx\n"
        "  netspec export specs/lenet.yaml --format python --checkpoint runs/lenet-.../best.pt --out lenet.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="path to a YAML spec")
    p.add_argument("--format", required=True, choices=("onnx", "pt2", "python"), help="what to write")
    p.add_argument("--checkpoint", help="a run's best.pt or last.pt: export its trained weights")
    p.add_argument("--out", help="file or folder to write (default: <name>.onnx / .pt2 / .py here)")
    p.add_argument(
        "--batch", type=_batch, default="dynamic", help="'dynamic' (default: any batch size) or a fixed batch size"
    )
    p.add_argument("--opset", type=_positive_int, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "draw",
        help="draw the network as a PNG or SVG diagram (shapes on the edges, branches side by side)",
        epilog="examples:\n  netspec draw specs/lenet.yaml --out lenet.png\n"
        "  netspec draw specs/resnet_small.yaml --out resnet.svg --detail",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="path to a YAML spec")
    p.add_argument("--out", required=True, help="the picture to write: a .png or .svg file")
    p.add_argument(
        "--style", choices=("graph", "blocks"), default="graph",
        help="graph: a box per layer (default); blocks: a box per top-level entry",
    )  # fmt: skip
    p.add_argument("--detail", action="store_true", help="expand block uses and repeats into their layers")
    p.set_defaults(func=cmd_draw)
    return parser


def _version() -> str:
    from netspec import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NetspecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
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
