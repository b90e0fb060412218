"""`netspec draw`: a picture of a network, from its spec alone (no tensors), with matplotlib.

The layout walks the same shaped tree as the compiler: a sequence stacks its children top
to bottom, a merge puts its branches side by side and joins them in a merge node, an
identity branch or shortcut is a plain edge, and named taps (`as`/`from`) are curved
edges from the producer to the reader. Every edge carries the shape that flows along
it. Block uses and repeats are one box each unless `detail=True`; `style="blocks"`
draws every top-level entry (merges included) as one box.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.errors import UsageError
from netspec.fileio import atomic_write_bytes
from netspec.layers import format_shape
from netspec.shapes import LayerInfo, NetShape, ShapedMerge, ShapedNode, ShapedSeq, infer_shapes, output_of, rows_of
from netspec.spec import Spec

STYLES = ("graph", "blocks")
BOX_W, BOX_H = 3.2, 0.62  # a box, in layout units (one unit: 0.6 inch)
GAP = 0.55  # vertical room for an edge and its shape label
BRANCH_GAP = 0.35
IDENTITY_W = 0.9  # the width an identity branch takes
# Short names for common arguments, so that a box reads like a textbook figure ("conv2d 5×5, 6, p2").
SHORT = {"out_channels": "", "out_features": "", "kernel_size": "k", "stride": "s", "padding": "p", "groups": "g"}
COLORS = {"conv": "#dbe9f6", "pool": "#e5f5e0", "norm": "#fdf0d5", "linear": "#f2e1f5", "merge": "#fde0dd"}


def _color(kind: str) -> str:
    for key, color in COLORS.items():
        if key in kind:
            return color
    return "#f3f3f3"


def _args_text(info: LayerInfo) -> str:
    args = info.layer.model_dump(exclude_defaults=True, exclude={"kind"})
    parts = []
    for name, value in args.items():
        if value is None:
            continue
        shown = "×".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
        short = SHORT.get(name, name + "=")
        parts.append(f"{short}{shown}")
    return ", ".join(parts)


@dataclass
class _Box:
    x: float  # centre
    y: float  # top
    w: float
    h: float
    title: str
    text: str = ""
    color: str = "#f3f3f3"
    round: bool = False  # merge nodes are drawn round


@dataclass
class _Edge:
    start: tuple[float, float]
    end: tuple[float, float]
    label: str = ""  # the shape flowing along it
    arrow: bool = True
    label_at: str = "mid"  # "start" or "end" for long edges, so that the label sits beside a box, not on one
    straight: bool = False  # an identity branch runs straight down its own column


@dataclass
class _Drawing:
    boxes: list[_Box] = field(default_factory=list)
    edges: list[_Edge] = field(default_factory=list)
    owner: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # row -> (x, top, bottom) of its box


class _Layout:
    def __init__(self, detail: bool, style: str) -> None:
        self.detail = detail
        self.style = style
        self.drawing = _Drawing()

    # --- what is one box ---------------------------------------------------------------------

    def collapsed(self, node: ShapedNode, depth: int) -> bool:
        if isinstance(node, LayerInfo):
            return True
        if self.style == "blocks" and depth == 1:
            return True
        return isinstance(node, ShapedSeq) and node.label is not None and not self.detail

    def box_text(self, node: ShapedNode) -> tuple[str, str, str, bool]:
        """(title, detail text, colour, round) of a node drawn as one box."""
        if isinstance(node, LayerInfo):
            return node.kind, _args_text(node), _color(node.kind), False
        rows = rows_of(node)
        summary = f"{len(rows)} layer{'s' if len(rows) != 1 else ''}, {sum(r.params for r in rows):,} params"
        if isinstance(node, ShapedMerge):
            return f"{node.info.kind} ({len(node.branches)} branches)", summary, "#eeeeee", False
        label, prefix = node.label or "sequence", ""
        if label.startswith("repeat"):
            # A repeat's children are its copies; a copy that is one block use names what is repeated.
            copy = node.children[0]
            inner = copy.children[0] if isinstance(copy, ShapedSeq) and len(copy.children) == 1 else None
            prefix, label = label, inner.label if isinstance(inner, ShapedSeq) and inner.label else ""
        name, _, args = label.partition(" ")  # a block use's label: "inception c1=64, c2a=96, ..."
        return f"{prefix} {name}".strip(), (f"{args}; " if args else "") + summary, "#eeeeee", False

    # --- sizes -----------------------------------------------------------------------------------

    def size(self, node: ShapedNode, depth: int) -> tuple[float, float]:
        if self.collapsed(node, depth):
            return BOX_W, BOX_H
        if isinstance(node, ShapedMerge):
            widths, heights = zip(*(self.size(b, depth + 1) for b in node.branches), strict=True)
            widths = [w or IDENTITY_W for w in widths]
            return sum(widths) + BRANCH_GAP * (len(widths) - 1), GAP + max(heights) + GAP + BOX_H * 0.8
        if not node.children:
            return 0.0, 0.0
        sizes = [self.size(c, depth + 1) for c in node.children]
        return max(w for w, _ in sizes), sum(h for _, h in sizes) + GAP * (len(sizes) - 1)

    # --- placement -------------------------------------------------------------------------------

    def place(
        self, node: ShapedNode, x: float, top: float, depth: int, inputs: list[tuple[float, float, str]]
    ) -> tuple[float, float]:
        """Draw `node` with its top centre at (x, top), fed by `inputs` (anchor x, y and shape text).
        Returns the anchor of its output (bottom centre)."""
        d = self.drawing
        if self.collapsed(node, depth):
            title, text, color, rnd = self.box_text(node)
            d.boxes.append(_Box(x, top, BOX_W, BOX_H, title, text, color, rnd))
            for ax, ay, shape in inputs:
                near = abs(ax - x) < 1e-6 and top - ay <= GAP + 1e-6
                d.edges.append(_Edge((ax, ay), (x, top), shape, label_at="mid" if near else "end"))
            for row in rows_of(node):
                d.owner[row.index] = (x, top, top + BOX_H)
            return x, top + BOX_H
        if isinstance(node, ShapedMerge):
            return self.place_merge(node, x, top, depth, inputs)
        return self.place_seq(node, x, top, depth, inputs)

    def place_seq(
        self, node: ShapedSeq, x: float, top: float, depth: int, inputs: list[tuple[float, float, str]]
    ) -> tuple[float, float]:
        if not node.children:
            ax, ay, _ = inputs[0]
            return ax, ay
        values = [inputs[0]]  # tap positions: 0 is the sequence's input, k + 1 child k's output
        current = inputs
        y = top
        for k, child in enumerate(node.children):
            source = node.sources[k] if node.sources else None
            feed = current if source is None else [values[j] for j in source]
            _, h = self.size(child, depth + 1)
            ox, oy = self.place(child, x, y, depth + 1, feed)
            shape = format_shape(output_of(child))
            values.append((ox, oy, shape))
            current = [(ox, oy, shape)]
            y += h + GAP
        return current[0][0], current[0][1]

    def place_merge(
        self, node: ShapedMerge, x: float, top: float, depth: int, inputs: list[tuple[float, float, str]]
    ) -> tuple[float, float]:
        d = self.drawing
        sizes = [self.size(b, depth + 1) for b in node.branches]
        widths = [w or IDENTITY_W for w, _ in sizes]
        total = sum(widths) + BRANCH_GAP * (len(widths) - 1)
        branch_top = top + GAP
        merge_top = branch_top + max(h for _, h in sizes) + GAP
        left = x - total / 2
        outs = []
        for b, (branch, width) in enumerate(zip(node.branches, widths, strict=True)):
            bx = left + width / 2
            feed = [inputs[b] if len(inputs) > 1 else inputs[0]]
            if branch.children:
                ox, oy = self.place(branch, bx, branch_top, depth + 1, feed)
                outs.append((ox, oy, format_shape(output_of(branch))))
            else:  # the identity: the input runs down its own column to the merge
                fx, fy, shape = feed[0]
                d.edges.append(_Edge((fx, fy), (bx, branch_top), shape, arrow=False, label_at="end"))
                d.edges.append(_Edge((bx, branch_top), (bx, merge_top - GAP / 2), arrow=False, straight=True))
                outs.append((bx, merge_top - GAP / 2, ""))
            left += width + BRANCH_GAP
        symbol = {"concat": "concat", "add": "+", "multiply": "×", "residual": "+"}.get(node.info.kind, node.info.kind)
        w = BOX_W * 0.55
        d.boxes.append(_Box(x, merge_top, w, BOX_H * 0.8, symbol, "", COLORS["merge"], True))
        d.owner[node.info.index] = (x, merge_top, merge_top + BOX_H * 0.8)
        for ox, oy, shape in outs:
            d.edges.append(_Edge((ox, oy), (x, merge_top), shape, label_at="start"))
        return x, merge_top + BOX_H * 0.8


def draw(spec: Spec | NetShape | str | Path, path: str | Path, *, style: str = "graph", detail: bool = False) -> Path:
    """Draw the network to `path` (.png or .svg); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"{path}: write a .png or an .svg file")
    if style not in STYLES:
        raise UsageError(f"unknown style '{style}'; choose from {', '.join(STYLES)}")
    if not path.parent.exists():
        raise UsageError(f"{path.parent}: no such folder")
    net = spec if isinstance(spec, NetShape) else infer_shapes(spec)

    layout = _Layout(detail, style)
    width, height = layout.size(net.root, 0)
    title = f"{net.name}: {net.total_params:,} parameters, {net.macs:,} MACs"
    width = max(width, BOX_W, 0.13 * len(title))
    input_box = _Box(0.0, 0.0, BOX_W, BOX_H, "input", format_shape(net.input_shape), "#ffffff")
    layout.drawing.boxes.append(input_box)
    ox, oy = layout.place(net.root, 0.0, BOX_H + GAP, 0, [(0.0, BOX_H, format_shape(net.input_shape))])
    out_top = BOX_H + GAP + height + GAP
    layout.drawing.boxes.append(_Box(0.0, out_top, BOX_W, BOX_H, "output", format_shape(net.output_shape), "#ffffff"))
    layout.drawing.edges.append(_Edge((ox, oy), (0.0, out_top), format_shape(net.output_shape)))
    total_h = out_top + BOX_H

    inch = 0.6
    fig = plt.figure(figsize=((width + 1.5) * inch, (total_h + 1.2) * inch))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-width / 2 - 0.75, width / 2 + 0.75)
    ax.set_ylim(total_h + 0.6, -0.6)
    ax.axis("off")
    ax.text(-width / 2 - 0.6, -0.35, title, fontsize=9, ha="left", va="center", color="#333333")
    for box in layout.drawing.boxes:
        style_ = "round,pad=0.02,rounding_size=0.25" if box.round else "round,pad=0.02,rounding_size=0.08"
        ax.add_patch(
            FancyBboxPatch(
                (box.x - box.w / 2, box.y), box.w, box.h, boxstyle=style_, fc=box.color, ec="#555555", lw=0.8, zorder=2
            )
        )
        if box.text:
            ax.text(
                box.x, box.y + box.h * 0.33, box.title, ha="center", va="center", fontsize=8, weight="bold", zorder=3
            )
            wrapped = textwrap.shorten(box.text, 44, placeholder="…")
            ax.text(box.x, box.y + box.h * 0.72, wrapped, ha="center", va="center", fontsize=6, color="#333", zorder=3)
        else:
            ax.text(box.x, box.y + box.h / 2, box.title, ha="center", va="center", fontsize=8, weight="bold", zorder=3)
    for edge in layout.drawing.edges:
        (x0, y0), (x1, y1) = edge.start, edge.end
        # Straight down where possible; a long jump (a tap read far below) bows out to the side.
        rad = 0.0 if abs(x1 - x0) < 1e-6 and abs(y1 - y0) < 2 * GAP + BOX_H else (0.3 if x1 <= x0 else -0.3)
        if abs(x1 - x0) > 1e-6:
            rad = -0.2 if x1 > x0 else 0.2
        if edge.straight:
            rad = 0.0
        ax.add_patch(
            FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>" if edge.arrow else "-", mutation_scale=7, lw=0.7,
                            color="#444444", connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0, zorder=1)
        )  # fmt: skip
        if edge.label:
            lx, ly = {"mid": ((x0 + x1) / 2, (y0 + y1) / 2), "start": (x0, y0 + 0.2), "end": (x1, y1 - 0.22)}[
                edge.label_at
            ]
            ax.text(lx + 0.08, ly, edge.label, fontsize=6, color="#1f5fa8", va="center", ha="left")
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig: Any, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "netspec"}):  # real <text>, stable ids
        fig.savefig(buffer, format=path.suffix.lstrip(".").lower(), dpi=150)
    atomic_write_bytes(path, buffer.getvalue())
