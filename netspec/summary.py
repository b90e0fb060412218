"""What `netspec build` shows: a rich table or a JSON object of the inferred network (and, given a batch
size, the memory model's prediction: memory.py)."""

from __future__ import annotations

import re
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from netspec.layers import format_shape
from netspec.memory import MemoryEstimate, format_bytes
from netspec.shapes import LayerInfo, NetShape

# Paths fold after a dot, never inside a name; the narrowest the layer column gets before other text folds.
MIN_PATH_WIDTH = 16


def summary_dict(net: NetShape, memory: MemoryEstimate | None = None, processes: int = 1) -> dict[str, Any]:
    """The JSON form of `netspec build --json` (with `memory` when a batch size was given)."""
    rows = {row.info.index: row for row in memory.rows} if memory else {}
    data = {
        "name": net.name,
        "input_shape": list(net.input_shape),
        "output_shape": list(net.output_shape),
        "total_params": net.total_params,
        "trainable_params": net.trainable_params,
        "macs": net.macs,
        "elementwise": net.elementwise,
        "layers": [
            {
                "index": info.index,
                "path": info.path,
                "kind": info.kind,
                "depth": info.depth,
                "output_shape": list(info.output_shape),
                "params": info.params,
                "macs": info.macs,
                "elementwise": info.elementwise,
                **({"saved_bytes": rows[info.index].saved} if memory else {}),
                **({"as": info.name} if info.name else {}),
                **({"from": list(info.reads)} if info.reads else {}),
            }
            for info in net.layers
        ],
    }
    if memory is not None:
        data["memory"] = memory.to_dict(processes)
    if net.warnings:
        data["warnings"] = list(net.warnings)
    return data


def _fold(text: str, width: int, indent: str, after: str) -> str:
    """`text` in lines of at most `width` characters (besides the indent), broken only after one of the characters
    `after` (a name that alone is too long, also after an underscore), so that no name is cut; continuation lines
    keep the indent of the merge they sit in."""
    parts = []
    for part in re.split(f"(?<=[{re.escape(after)}])", text):
        parts += re.split(r"(?<=_)", part) if len(part) > width - 2 else [part]
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = "  "
        line += part
    lines.append(line)
    return "\n".join(indent + line.rstrip() for line in lines)


def _number(value: int) -> str:
    return f"{value:,}" if value else "-"


def summary_table(net: NetShape, memory: MemoryEstimate | None = None, width: int | None = None) -> Table:
    """The table of `netspec build`: one row per layer or merge (branches indented under it), then the totals.

    When the table is wider than `width` (a terminal of 80 columns), it narrows step by step, the least important
    first: one space between columns instead of three, a row inside a merge shows its path from the merge's (`….residual[0]`), paths fold after a dot (a name
    too long for a line after an underscore) and kinds after an underscore, a merge's element-wise operations
    move into the MACs column (in parentheses), and last the row numbers go. The numbers never fold, and
    `--json` has every full path.
    """
    saved = {row.info.index: row.saved for row in memory.rows} if memory else {}
    parents: dict[int, str] = {}  # a row inside a merge -> the path of its innermost merge
    stack: list[tuple[int, str]] = []
    for info in net.layers:
        while stack and stack[-1][0] >= info.depth:
            stack.pop()
        if stack:
            parents[info.index] = stack[-1][1]
        if info.is_merge:
            stack.append((info.depth, info.path))

    def path_of(info: LayerInfo, narrow: bool) -> str:
        parent = parents.get(info.index)
        path = info.path
        if narrow and parent and path.startswith(parent + "."):
            path = "…" + path[len(parent) :]
        return path + (f" → {info.name}" if info.name else "")

    def build(path_width: int | None, narrow: bool = False, numbered: bool = True, spacing: int = 0) -> Table:
        table = Table(
            title=f"{net.name}: input {format_shape(net.input_shape)} → output {format_shape(net.output_shape)}",
            title_justify="left",
            show_footer=True,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            padding=(0, spacing),  # the box's blank separators keep at least one space between columns
        )
        separate_elementwise = net.elementwise > 0 and not narrow
        if numbered:
            table.add_column("#", justify="right", footer="", no_wrap=True)
        # Folded, the layer column is the one rich may narrow further (mid-name, a last resort), never the numbers.
        table.add_column("layer", footer="total", no_wrap=path_width is None, overflow="fold")
        table.add_column("kind", no_wrap=True)
        table.add_column("output", footer=format_shape(net.output_shape), no_wrap=True)
        table.add_column("params", justify="right", footer=f"{net.total_params:,}", no_wrap=True)
        if net.elementwise and narrow:
            table.add_column(
                "MACs\n(element-\nwise)", justify="right", footer=f"{net.macs:,}\n({net.elementwise:,})", no_wrap=True
            )
        else:
            table.add_column("MACs", justify="right", footer=f"{net.macs:,}", no_wrap=True)
        if separate_elementwise:
            table.add_column("element-\nwise", justify="right", footer=f"{net.elementwise:,}", no_wrap=True)
        if memory is not None:
            table.add_column("saved", justify="right", footer=format_bytes(memory.activations), no_wrap=True)
        for info in net.layers:
            indent = "│ " * info.depth  # rows inside a merge's branches are indented under the merge's row
            path = path_of(info, narrow)
            kind = info.kind + (f" ← {', '.join(info.reads)}" if info.reads else "")
            macs = _number(info.macs)
            if narrow and info.elementwise:
                macs = f"({info.elementwise:,})"
            cells = [
                *([str(info.index)] if numbered else []),
                indent + path if path_width is None else _fold(path, path_width - len(indent), indent, ". "),
                _fold(kind, 12, "", "_ ") if narrow else indent + kind,  # the layer column shows the depth
                format_shape(info.output_shape),
                _number(info.params),
                macs,
            ]
            if separate_elementwise:
                cells.append(_number(info.elementwise))
            if memory is not None:
                cells.append(format_bytes(saved[info.index]) if saved[info.index] else "-")
            table.add_row(*cells)
        return table

    for spacing in (1, 0):
        table = build(None, spacing=spacing)
        if width is None or _natural_width(table) <= width:
            return table
    longest = max(len("│ " * info.depth + path_of(info, True)) for info in net.layers)
    for numbered in (True, False):
        # Everything but the layer column at its natural width; the paths fold into what is left.
        path_width = width - (_natural_width(build(None, True, numbered)) - longest)
        if path_width >= MIN_PATH_WIDTH or not numbered:
            break
    while True:
        table = build(max(MIN_PATH_WIDTH, path_width), True, numbered)
        excess = _natural_width(table) - width
        if excess <= 0 or path_width <= MIN_PATH_WIDTH:
            return table
        path_width -= excess


def _natural_width(table: Table) -> int:
    console = Console(width=100_000)
    return Measurement.get(console, console.options, table).maximum


def memory_table(memory: MemoryEstimate, processes: int = 1) -> Table:
    """The memory summary under the build table: what a training step needs, and inference."""
    precision = "float32" if memory.amp == "none" else f"autocast {memory.amp}"
    optimizer = memory.optimizer + (f" (momentum {memory.momentum:g})" if memory.momentum else "")
    batch = f"batch {memory.batch_size}"
    if processes > 1:  # DDP: every process holds the whole model and its share of the batch
        batch = f"{batch} ({memory.batch_size * processes} over {processes} processes), per process"
    table = Table(
        title=f"memory at {batch}: {precision}, {optimizer}, {memory.device} kernels",
        title_justify="left",
        box=None,
        show_header=False,
        pad_edge=False,
    )
    table.add_column("what")
    table.add_column("bytes", justify="right", no_wrap=True)
    table.add_column("note", style="dim")
    copies = memory.optimizer_state // memory.params if memory.params else 0
    rows = [
        ("parameters", memory.params, "float32"),
        ("gradients", memory.grads, "float32, as the parameters"),
        ("optimizer state", memory.optimizer_state, f"{copies}× the parameters" if copies else "none for plain SGD"),
        ("buffers", memory.buffers, "batch-norm running statistics, index tables"),
        ("saved activations", memory.activations, "kept for backward, at the end of the forward"),
        ("output and loss", memory.output, ""),
        ("backward transient", memory.transient, "the largest: a layer's output and input grads"),
        ("peak, training step", memory.peak_train, "the sum of the above (an upper bound)"),
        ("peak, inference", memory.peak_infer, "weights and the activations alive at once"),
    ]
    for what, value, note in rows:
        table.add_row(what, format_bytes(value), note)
    return table
