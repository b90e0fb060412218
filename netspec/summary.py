"""What `netspec build` shows: a rich table or a JSON object of the inferred network."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from netspec.layers import format_shape
from netspec.shapes import NetShape


def summary_dict(net: NetShape) -> dict[str, Any]:
    """The JSON form of `netspec build --json`."""
    return {
        "name": net.name,
        "input_shape": list(net.input_shape),
        "output_shape": list(net.output_shape),
        "total_params": net.total_params,
        "trainable_params": net.trainable_params,
        "macs": net.macs,
        "layers": [
            {
                "index": info.index,
                "path": info.path,
                "kind": info.kind,
                "depth": info.depth,
                "output_shape": list(info.output_shape),
                "params": info.params,
                "macs": info.macs,
                **({"as": info.name} if info.name else {}),
                **({"from": list(info.reads)} if info.reads else {}),
            }
            for info in net.layers
        ],
    }


def summary_table(net: NetShape) -> Table:
    """The table of `netspec build`: one row per layer or merge (branches indented under it), then the totals."""
    table = Table(
        title=f"{net.name}: input {format_shape(net.input_shape)} → output {format_shape(net.output_shape)}",
        title_justify="left",
        show_footer=True,
    )
    table.add_column("#", justify="right", footer="", no_wrap=True)
    table.add_column("layer", footer="total", overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("output shape", footer=format_shape(net.output_shape), no_wrap=True)
    table.add_column("params", justify="right", footer=f"{net.total_params:,}", no_wrap=True)
    table.add_column("MACs", justify="right", footer=f"{net.macs:,}", no_wrap=True)
    for info in net.layers:
        # Rows inside a merge's branches are indented under the merge's row.
        indent = "│ " * info.depth
        table.add_row(
            str(info.index),
            indent + info.path + (f" → {info.name}" if info.name else ""),
            indent + info.kind + (f" ← {', '.join(info.reads)}" if info.reads else ""),
            format_shape(info.output_shape),
            f"{info.params:,}" if info.params else "-",
            f"{info.macs:,}" if info.macs else "-",
        )
    return table
