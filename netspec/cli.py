"""The `netspec` command: a thin layer over the Python API.

Exit codes: 0 success, 2 invalid spec or arguments, 1 anything else
(130 when training is interrupted after saving a checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from netspec.errors import NetspecError


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
    if args.compile:
        build(net, compile=True)
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


# --- argument parsing --------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="netspec", description="Declarative model specs: build, train and benchmark.")
    parser.add_argument("--version", action="version", version=f"netspec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("build", help="validate a spec and show its layers, shapes, parameters and MACs")
    p.add_argument("spec", help="path to a YAML spec")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--compile", action="store_true", help="also wrap the module with torch.compile")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("schema", help="print the JSON Schema of the spec language (for editors)")
    p.set_defaults(func=cmd_schema)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


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
