"""The command line's parts: the parser (with did-you-mean hints), option types (finite numbers within
bounds, batch sizes, memory sizes), and the options generated from the settings.

The options for `TrainConfig`'s, `BenchConfig`'s and `SweepConfig`'s fields are made from the fields
themselves (config.py): the name from the field's (`weight_decay` -> `--weight-decay`), the help from its
description, the choices from its `Literal`, and the parser from its type and bounds, so that a command
line accepts exactly what the spec's section does and a setting is described in one place.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin


def parse_number(text: str, cast: type, noun: str, minimum: float, inclusive: bool, maximum: int | None = None) -> Any:
    """`text` as a finite number of type `cast` (a whole number may be written 1e5) within its bounds; argparse
    names the option in the message."""
    import decimal
    import math

    try:
        value = cast(text)
    except ValueError:
        value = None
        if cast is int:  # 1e5, 2.0e3: a whole number written as a float, read exactly
            try:
                exact = decimal.Decimal(text.strip())
                if exact.is_finite() and exact.adjusted() > 40:  # 1e999999999 would take forever to expand
                    raise argparse.ArgumentTypeError(f"{text} is far too large")
                value = int(exact) if exact.is_finite() and exact == exact.to_integral_value() else None
            except (decimal.InvalidOperation, ValueError):
                value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    if value < minimum or (not inclusive and value == minimum):
        bound = f"at least {minimum}" if inclusive else f"greater than {minimum}"
        raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {value:,}")
    return value


def positive_int(text: str) -> int:
    return parse_number(text, int, "a whole number", 1, inclusive=True)


def non_negative_int(text: str) -> int:
    return parse_number(text, int, "a whole number", 0, inclusive=True)


def positive_float(text: str) -> float:
    return parse_number(text, float, "a number", 0, inclusive=False)


def non_negative_float(text: str) -> float:
    return parse_number(text, float, "a number", 0, inclusive=True)


def below_one(text: str) -> float:
    """0 <= x < 1: a momentum, a label smoothing, a split's share."""
    value = parse_number(text, float, "a number", 0, inclusive=True)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be less than 1, got {value}")
    return value


def fraction(text: str) -> float:
    """0 < x <= 1: a share of memory."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be at most 1, got {value}")
    return value


def batch_or_dynamic(text: str) -> int | str:
    """`export --batch`: dynamic (any batch size) or a fixed one."""
    return "dynamic" if text == "dynamic" else positive_int(text)


def batch_sizes(text: str) -> list[int | str]:
    """`64,256,auto`: whole numbers, or auto (the largest that fits: --memory-budget / --memory-fraction)."""
    values = [
        part.strip() if part.strip() == "auto" else positive_int(part) for part in text.split(",") if part.strip()
    ]
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list of whole numbers (or auto)")
    return values


def batch_size_or_auto(text: str) -> int | str:
    """`train --batch-size`: a whole number, or auto (the largest that fits)."""
    return "auto" if text == "auto" else positive_int(text)


def byte_size(text: str) -> int:
    """A memory size: 8GiB, 512MB, 1e9."""
    from netspec.memory import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class NetspecParser(argparse.ArgumentParser):
    """argparse, with a did-you-mean hint after an unknown option or an invalid choice."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._seen = list(sys.argv[1:] if args is None else args)  # for error's did-you-mean
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}{did_you_mean(self, message)}", file=sys.stderr)
        raise SystemExit(2)


def did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    """A hint for an unknown option (among the subcommand's own) or an invalid choice: the closest spelling."""
    import difflib
    import re

    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        close = difflib.get_close_matches(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)), n=1)
        return f"; did you mean '{close[0]}'?" if close else ""
    if not message.startswith("unrecognized arguments:"):
        return ""
    target = parser
    for action in parser._actions:  # the top-level parser reports the subcommand's leftovers
        if isinstance(action, argparse._SubParsersAction):
            name = next((t for t in getattr(parser, "_seen", []) if t in action.choices), None)
            if name is not None:
                target = action.choices[name]
    options = [o for a in target._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for token in message.split(":", 1)[1].split():
        if token.startswith("-"):
            close = difflib.get_close_matches(token.split("=", 1)[0], options, n=1, cutoff=0.7)
            if close:
                hints.append(f"{token.split('=', 1)[0]}: did you mean {close[0]}?")
    return f" ({'; '.join(hints)})" if hints else ""


def _bounded(cast: type, metadata: list[Any]) -> Callable[[str], Any]:
    """The parser for a number field with annotated_types bounds (Gt, Ge, Lt, Le), with the messages of the
    parsers above."""
    from annotated_types import Ge, Gt, Le, Lt

    low = next((m for m in metadata if isinstance(m, Gt | Ge)), None)
    high = next((m for m in metadata if isinstance(m, Lt | Le)), None)
    if cast is float and isinstance(high, Lt) and high.lt == 1 and isinstance(low, Ge) and low.ge == 0:
        return below_one
    if cast is float and high is None:
        return positive_float if isinstance(low, Gt) else non_negative_float
    if cast is int and (high is None or isinstance(high, Le)):
        # A whole number > 0 is >= 1: one bound, inclusive, as positive_int says it.
        minimum = int(low.gt) + 1 if isinstance(low, Gt) else int(low.ge) if low is not None else None
        maximum = int(high.le) if high is not None else None
        if minimum is not None:
            parser = lambda text: parse_number(text, int, "a whole number", minimum, True, maximum)  # noqa: E731
            parser.__name__ = "positive_int" if minimum == 1 else "whole_number"
            return parser
    raise TypeError(f"no command-line parser for a {cast.__name__} with bounds {metadata}")


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """`Annotated[X, bounds] | None` -> X and its bounds (pydantic moves them to the metadata only outside a
    union)."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            annotation = rest[0]
    if get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        metadata = [*metadata, *more]
    return annotation, metadata


def add_field_option(
    group: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: Any,
    name: str,
    flag: str | None = None,
    *,
    note: str | None = None,
    show_default: bool = False,
    **overrides: Any,
) -> argparse.Action:
    """The option `--NAME` for the field `name` of the settings class `model`: help from its description,
    choices from its Literal, the parser from its type and bounds. The option's own default is None (or
    False): given, it overrides the spec. `note` (and the field's default, with `show_default`) go after the
    help in parentheses; `overrides` (help, metavar, type, action, ...) replace what is derived, for what a
    command line says differently from a spec."""
    field = model.model_fields[name]
    annotation, metadata = _unwrap(field.annotation, field.metadata)
    notes = [f"default: {field.default}"] * show_default + [note] * (note is not None)
    derived: dict[str, Any] = {"help": field.description + (f" ({'; '.join(notes)})" if notes else "")}
    if "type" in overrides or "action" in overrides:
        pass  # the command line's own form (an `auto`, a --no- flag, a comma-separated list)
    elif get_origin(annotation) is Literal:
        derived["choices"] = get_args(annotation)
    elif annotation is bool:
        derived["action"] = "store_true"
    elif get_origin(annotation) is list:
        derived["action"] = "append"
    elif annotation in (int, float):
        derived["type"] = _bounded(annotation, metadata)
    elif annotation is not str:
        raise TypeError(f"{model.__name__}.{name}: no command-line form for {annotation}; give one in overrides")
    derived.update(overrides)
    return group.add_argument(flag or f"--{name.replace('_', '-')}", **derived)
