"""`netspec draw`: a picture of a network, from its spec alone (no tensors), with matplotlib.

(Over 800 lines on purpose: it is one concern, a layout whose rules below refer to each other, and reads
better whole.)

The layout walks the same shaped tree as the compiler: a sequence stacks its children top to
bottom, a merge puts its branches side by side and joins them in a merge node, an identity
branch or shortcut is an edge down a column of its own, and named taps (`as`/`from`) are edges
from the producer to the reader. Every edge carries the shape that flows along it. Block uses
and repeats are one box each unless `detail=True`; `style="blocks"` draws every top-level entry
(merges included) as one box.

Three rules keep the picture readable at any size:

- Text fits its box: every string is measured with matplotlib's own renderer, a box is as wide
  as its widest text needs (within bounds), and what does not fit is wrapped at its commas,
  set smaller (down to 5 pt), and only then shortened with "…".
- Edges never cross a box: they run as straight vertical and horizontal segments through the
  free space between boxes (fan-outs and fan-ins as buses in the gap above and below a merge),
  and an edge that would cross boxes (a tap read far below) runs in a lane beside them.
- A network taller than a screen wraps into columns, where no named tap crosses the cut, with
  the number of columns that makes the whole closest to a screen's shape; text is never scaled.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError, UsageError
from netspec.fileio import atomic_write_bytes
from netspec.graph import Role
from netspec.layers import format_shape
from netspec.shapes import LayerInfo, NetShape, ShapedMerge, ShapedNode, ShapedSeq, infer_shapes, output_of, rows_of
from netspec.spec import Spec

STYLES = ("graph", "blocks")
DPI = 150
INCH = 0.6  # one layout unit, in inches
PT = 72 * INCH  # points per layout unit
GAP = 0.55  # vertical room between boxes, for an edge and its shape label
BRANCH_GAP = 0.35  # horizontal room between branches
IDENTITY_W = 0.9  # the width of an identity branch's column
LANE_GAP = 0.28  # between a lane and the boxes or lanes beside it
GUTTER = 1.0  # between columns
MIN_BOX_W, MAX_BOX_W = 2.0, 3.6
PAD_X, PAD_Y = 0.12, 0.1  # inside a box
TITLE_PT, MIN_TITLE_PT = 8.0, 6.5
TEXT_PT, MIN_TEXT_PT = 6.0, 5.0
LABEL_PT = 6.0
MAX_TEXT_LINES = 3
MAX_COLUMN_H = 20.0  # taller than this (about 1,800 px at 150 dpi), a network wraps into columns
SCREEN_ASPECT = 1.6  # width / height of the screen a picture is fitted to
MAX_COLUMNS = 12
# Short names for common arguments, so that a box reads like a textbook figure ("conv2d 5×5, 6, p2").
SHORT = {"out_channels": "", "out_features": "", "kernel_size": "k", "stride": "s", "padding": "p", "groups": "g"}
SIZES = {
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "output_padding",
    "output_size",
    "size",
    "shape",
    "scale_factor",
}
COLORS = {"conv": "#dbe9f6", "pool": "#e5f5e0", "norm": "#fdf0d5", "linear": "#f2e1f5", "merge": "#fde0dd"}
MERGE_SYMBOLS = {"concat": "concat", "add": "+", "subtract": "−", "multiply": "×", "matmul": "@", "residual": "+"}
EPS = 1e-6


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
        if isinstance(value, (tuple, list)):  # sizes read 3×3; other lists (permute's dims) as written
            shown = "×".join(map(str, value)) if name in SIZES else f"[{', '.join(map(str, value))}]"
        else:
            shown = str(value)
        short = SHORT.get(name, name + "=")
        parts.append(f"{short}{shown}")
    return ", ".join(parts)


def supported_formats() -> dict[str, str]:
    """The file formats matplotlib can write here: suffix -> description."""
    from matplotlib.backend_bases import FigureCanvasBase

    return FigureCanvasBase.get_supported_filetypes()


# --- text ----------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _renderer() -> Any:
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, DPI)


@lru_cache(maxsize=4096)
def text_width(text: str, size: float, bold: bool = False) -> float:
    """The width of `text` in layout units, as matplotlib's renderer lays it out."""
    from matplotlib.font_manager import FontProperties

    font = FontProperties(size=size, weight="bold" if bold else "normal")
    width, _, _ = _renderer().get_text_width_height_descent(text, font, ismath=False)
    return width / DPI / INCH


def _line_height(size: float) -> float:
    return size * 1.3 / PT


def _shorten(text: str, width: float, size: float, bold: bool = False) -> str:
    """`text` cut to fit `width`, ending in "…"."""
    if text_width(text, size, bold) <= width:
        return text
    while text and text_width(text + "…", size, bold) > width:
        text = text[:-1]
    return text.rstrip(", ;") + "…"


def _wrap(text: str, width: float, size: float) -> list[str]:
    """Lines of `text` broken after its commas and semicolons, each fitting `width` if any can, as even as
    the fewest lines allow (not a full first line and a word on the second)."""
    lines = _greedy(text, width, size)
    lo, hi = width / (len(lines) + 1), width
    for _ in range(12):  # the narrowest width that still needs no more lines
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if len(_greedy(text, mid, size)) <= len(lines) else (mid, hi)
    return _greedy(text, hi, size)


def _greedy(text: str, width: float, size: float) -> list[str]:
    tokens, start = [], 0
    for i, char in enumerate(text):
        if char in ",;" and i + 1 < len(text) and text[i + 1] == " ":
            tokens.append(text[start : i + 2])
            start = i + 2
    tokens.append(text[start:])
    lines: list[str] = []
    line = ""
    for token in tokens:
        if line and text_width((line + token).rstrip(), size) > width:
            lines.append(line.rstrip())
            line = token
        else:
            line += token
    lines.append(line.rstrip())
    return [line for line in lines if line]


def _lines(text: str, width: float, size: float) -> list[str]:
    """One line if it fits; else each "; "-separated part on lines of its own if that takes at most
    MAX_TEXT_LINES; else one greedy wrap."""
    greedy = _wrap(text, width, size)
    if len(greedy) == 1:
        return greedy
    parts = [line for part in text.split("; ") for line in _wrap(part, width, size)]
    return parts if len(parts) <= MAX_TEXT_LINES else greedy


@dataclass
class BoxText:
    """A box's title (bold) and detail lines, at the sizes that fit its width."""

    title: str
    title_size: float
    lines: list[str]
    size: float

    @property
    def height(self) -> float:
        return 2 * PAD_Y + _line_height(self.title_size) + len(self.lines) * _line_height(self.size)


def fit_text(title: str, text: str, width: float) -> BoxText:
    """Fit a title and its detail text into a box `width` wide: wrap, then shrink, then shorten."""
    room = width - 2 * PAD_X
    title_size = TITLE_PT
    while text_width(title, title_size, True) > room and title_size > MIN_TITLE_PT:
        title_size -= 0.5
    title = _shorten(title, room, title_size, True)
    if not text:
        return BoxText(title, title_size, [], TEXT_PT)
    size, lines = TEXT_PT, _lines(text, room, TEXT_PT)
    while size > MIN_TEXT_PT and (len(lines) > MAX_TEXT_LINES or any(text_width(t, size) > room for t in lines)):
        size -= 0.5
        lines = _lines(text, room, size)
    if len(lines) > MAX_TEXT_LINES:
        lines = [*lines[: MAX_TEXT_LINES - 1], " ".join(lines[MAX_TEXT_LINES - 1 :])]
    return BoxText(title, title_size, [_shorten(line, room, size) for line in lines], size)


# --- geometry ------------------------------------------------------------------------------------


Rect = tuple[float, float, float, float]  # left, right, top, bottom


@dataclass
class Box:
    x: float  # centre
    y: float  # top (y grows downwards)
    w: float
    h: float
    text: BoxText
    color: str = "#f3f3f3"
    round: bool = False  # merge nodes are drawn round

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def right(self) -> float:
        return self.x + self.w / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h

    @property
    def rect(self) -> Rect:
        return self.left, self.right, self.y, self.bottom


Point = tuple[float, float]


@dataclass
class Port:
    """Where a value leaves: the bottom centre of the box that makes it, or a free point."""

    x: float
    y: float
    shape: str


@dataclass
class Edge:
    """A polyline of vertical and horizontal segments from a port to a box's top (or a free point)."""

    start: Port
    end: Point
    via: tuple[float, float, float] | None = None  # (x, y_in, y_out): down the column of an identity branch
    arrow: bool = True
    label: str = ""
    points: list[Point] = field(default_factory=list)


@dataclass
class Label:
    x: float  # left
    y: float  # centre
    w: float
    h: float
    text: str

    @property
    def rect(self) -> Rect:
        return self.x, self.x + self.w, self.y - self.h / 2, self.y + self.h / 2


def segment_hits(a: Point, b: Point, rect: Rect, inset: float = 0.02) -> bool:
    """Whether the segment a-b passes through the inside of `rect` (Liang-Barsky clipping)."""
    x0, y0 = a
    dx, dy = b[0] - x0, b[1] - y0
    lo, hi = 0.0, 1.0
    bounds = (rect[0] + inset, rect[1] - inset, rect[2] + inset, rect[3] - inset)
    for p, q in ((-dx, x0 - bounds[0]), (dx, bounds[1] - x0), (-dy, y0 - bounds[2]), (dy, bounds[3] - y0)):
        if abs(p) < EPS:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            lo = max(lo, t)
        else:
            hi = min(hi, t)
        if lo > hi:
            return False
    return True


def _segments(points: list[Point]) -> Iterator[tuple[Point, Point]]:
    return pairwise(points)


def _simplify(points: list[Point]) -> list[Point]:
    """Drop repeated points and the middle of three collinear ones."""
    out: list[Point] = []
    for p in points:
        if out and abs(out[-1][0] - p[0]) < EPS and abs(out[-1][1] - p[1]) < EPS:
            continue
        if len(out) >= 2:
            (ax, ay), (bx, by) = out[-2], out[-1]
            if (abs(ax - bx) < EPS and abs(bx - p[0]) < EPS) or (abs(ay - by) < EPS and abs(by - p[1]) < EPS):
                out[-1] = p
                continue
        out.append(p)
    return out


# --- layout --------------------------------------------------------------------------------------


@dataclass
class Column:
    """One column of the picture: its boxes and edges, laid out around x = 0 and shifted into place."""

    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    entry: Port | None = None  # where the edge from the previous column arrives
    exit: Port | None = None  # the port the next column continues from

    def extent(self) -> tuple[float, float]:
        xs = [v for b in self.boxes for v in (b.left, b.right)]
        xs += [p[0] for e in self.edges for p in e.points]
        xs += [v for lab in self.labels for v in (lab.x, lab.x + lab.w)]
        return min(xs), max(xs)

    def shift(self, dx: float) -> None:
        for b in self.boxes:
            b.x += dx
        for e in self.edges:
            e.points = [(x + dx, y) for x, y in e.points]
        for lab in self.labels:
            lab.x += dx
        for port in (self.entry, self.exit):
            if port is not None:
                port.x += dx


@dataclass
class Layout:
    """Every box, edge and label of a picture, in layout units (y grows downwards)."""

    columns: list[Column]
    connectors: list[Edge]  # from the bottom of one column to the top of the next
    title: str
    bounds: tuple[float, float, float, float]  # left, top, right, bottom; the title sits at the top left

    @property
    def boxes(self) -> list[Box]:
        return [b for c in self.columns for b in c.boxes]

    @property
    def edges(self) -> list[Edge]:
        return [e for c in self.columns for e in c.edges] + self.connectors

    @property
    def labels(self) -> list[Label]:
        return [lab for c in self.columns for lab in c.labels]


class _Placer:
    """Places the boxes of a shaped tree and asks for the edges between them."""

    def __init__(self, detail: bool, style: str, box_w: float) -> None:
        self.detail = detail
        self.style = style
        self.box_w = box_w
        self.column = Column()
        self._texts: dict[int, tuple[BoxText, str]] = {}
        self._sizes: dict[tuple[int, int], tuple[float, float]] = {}

    # --- what is one box, and its text -------------------------------------------------------

    def collapsed(self, node: ShapedNode, depth: int) -> bool:
        if isinstance(node, LayerInfo):
            return True
        if self.style == "blocks" and depth == 1:
            return True
        return isinstance(node, ShapedSeq) and node.label is not None and not self.detail

    def box_of(self, node: ShapedNode) -> tuple[BoxText, str]:
        """(fitted text, colour) of a node drawn as one box."""
        key = id(node)
        if key not in self._texts:
            title, text, color = box_text(node)
            self._texts[key] = (fit_text(title, text, self.box_w), color)
        return self._texts[key]

    def merge_box(self, kind: str) -> tuple[BoxText, float]:
        symbol = MERGE_SYMBOLS.get(kind, kind)
        width = max(1.2, text_width(symbol, TITLE_PT, True) + 2 * PAD_X + 0.3)
        return fit_text(symbol, "", width), width

    # --- sizes -------------------------------------------------------------------------------

    def size(self, node: ShapedNode, depth: int) -> tuple[float, float]:
        key = (id(node), depth)
        if key not in self._sizes:
            self._sizes[key] = self._size(node, depth)
        return self._sizes[key]

    def _size(self, node: ShapedNode, depth: int) -> tuple[float, float]:
        if self.collapsed(node, depth):
            return self.box_w, self.box_of(node)[0].height
        if isinstance(node, ShapedMerge):
            sizes = [self.size(b, depth + 1) for b in node.branches]
            widths = self.branch_widths(node, sizes)
            merge_text, merge_w = self.merge_box(node.info.kind)
            width = max(sum(widths) + BRANCH_GAP * (len(widths) - 1), merge_w)
            return width, GAP + max(h for _, h in sizes) + GAP + merge_text.height
        if not node.children:
            return 0.0, 0.0
        sizes = [self.size(c, depth + 1) for c in node.children]
        return max(w for w, _ in sizes), sum(h for _, h in sizes) + GAP * (len(sizes) - 1)

    @staticmethod
    def branch_widths(node: ShapedMerge, sizes: list[tuple[float, float]]) -> list[float]:
        """An identity branch beside branches with layers runs down a column of its own (a straight line
        would cross their boxes); a merge of identities alone (taps combined as they are) needs none."""
        if not any(b.children for b in node.branches):
            return [0.0 for _ in sizes]
        return [w or IDENTITY_W for w, _ in sizes]

    # --- placement -----------------------------------------------------------------------------

    def add_box(self, box: Box) -> Box:
        self.column.boxes.append(box)
        return box

    def connect(self, inputs: list[Port], x: float, top: float) -> None:
        for port in inputs:
            self.column.edges.append(Edge(port, (x, top), label=port.shape))

    def place(self, node: ShapedNode, x: float, top: float, depth: int, inputs: list[Port]) -> Port:
        """Draw `node` with its top centre at (x, top), fed by `inputs`; returns its output port."""
        if self.collapsed(node, depth):
            text, color = self.box_of(node)
            box = self.add_box(Box(x, top, self.box_w, text.height, text, color))
            if not (isinstance(node, LayerInfo) and node.is_tensor):  # a learned tensor reads no input
                self.connect(inputs, x, top)
            return Port(x, box.bottom, format_shape(output_of(node)))
        if isinstance(node, ShapedMerge):
            return self.place_merge(node, x, top, depth, inputs)
        return self.place_seq(node, x, top, depth, inputs)

    def place_seq(self, node: ShapedSeq, x: float, top: float, depth: int, inputs: list[Port]) -> Port:
        if not node.children:
            return inputs[0]
        values = [inputs[0]]  # tap positions: 0 is the sequence's input, k + 1 child k's output
        current, y = inputs, top
        for child, source in zip(node.children, _sources(node), strict=True):
            feed = current if source is None else [values[j] for j in source]
            _, h = self.size(child, depth + 1)
            out = self.place(child, x, y, depth + 1, feed)
            values.append(out)
            current = [out]
            y += h + GAP
        return current[0]

    def place_merge(self, node: ShapedMerge, x: float, top: float, depth: int, inputs: list[Port]) -> Port:
        sizes = [self.size(b, depth + 1) for b in node.branches]
        widths = self.branch_widths(node, sizes)
        total = sum(widths) + BRANCH_GAP * (len(widths) - 1)
        branch_top = top + GAP
        merge_top = branch_top + max(h for _, h in sizes) + GAP
        merge_text, merge_w = self.merge_box(node.info.kind)
        left = x - total / 2
        for b, (branch, width) in enumerate(zip(node.branches, widths, strict=True)):
            bx = left + width / 2
            feed = inputs[b] if len(inputs) > 1 else inputs[0]
            if branch.children:
                out = self.place(branch, bx, branch_top, depth + 1, [feed])
                self.column.edges.append(Edge(out, (x, merge_top), label=out.shape))
            elif width:  # the identity: the input runs down a column of its own to the merge
                via = (bx, branch_top - GAP / 2, merge_top - GAP / 2)
                self.column.edges.append(Edge(feed, (x, merge_top), via=via, label=feed.shape))
            else:
                self.column.edges.append(Edge(feed, (x, merge_top), label=feed.shape))
            left += width + BRANCH_GAP
        box = self.add_box(Box(x, merge_top, merge_w, merge_text.height, merge_text, COLORS["merge"], True))
        return Port(x, box.bottom, format_shape(node.info.output_shape))


def box_text(node: ShapedNode) -> tuple[str, str, str]:
    """(title, detail text, colour) of a node drawn as one box."""
    if isinstance(node, LayerInfo):
        return node.kind, _args_text(node), _color(node.kind)
    rows = rows_of(node)
    summary = f"{len(rows)} layer{'s' if len(rows) != 1 else ''}, {sum(r.params for r in rows):,} params"
    if isinstance(node, ShapedMerge):
        return f"{node.info.kind} ({len(node.branches)} branches)", summary, "#eeeeee"
    prefix, use = "", node
    if node.role == Role.REPEAT:
        # A repeat's children are its copies; a copy that is one block use names what is repeated.
        copy = node.children[0]
        inner = copy.children[0] if isinstance(copy, ShapedSeq) and len(copy.children) == 1 else None
        prefix, use = node.label or "repeat", inner if isinstance(inner, ShapedSeq) else copy
    block = use.block if isinstance(use, ShapedSeq) else None
    name = block.name if block is not None else ""
    args = ", ".join(f"{k}={v}" for k, v in block.args.items()) if block is not None else ""
    if len(rows) == 1 and not rows[0].is_merge:  # a block of one layer says which
        summary = f"{rows[0].kind} {_args_text(rows[0])}".strip()
    return f"{prefix} {name}".strip() or "sequence", (f"{args}; " if args else "") + summary, "#eeeeee"


# --- routing -------------------------------------------------------------------------------------


class _Router:
    """Routes a column's edges: the plain routes first, then the lanes, shortest first (so that nested
    skips nest instead of crossing), each lane beside every box and earlier lane it runs past."""

    def __init__(self, boxes: list[Box]) -> None:
        self.boxes = boxes
        self.runs: list[tuple[float, float, float]] = []  # (x, y0, y1) of every vertical segment routed

    def clear(self, points: list[Point]) -> bool:
        return not any(segment_hits(a, b, box.rect) for a, b in _segments(points) for box in self.boxes)

    def record(self, points: list[Point]) -> None:
        for (ax, ay), (bx, by) in _segments(points):
            if abs(ax - bx) < EPS:
                self.runs.append((ax, min(ay, by), max(ay, by)))

    def route(self, edges: list[Edge]) -> None:
        lanes = []
        for edge in edges:
            for points in self.plain_routes(edge):
                if self.clear(points):
                    edge.points = _simplify(points)
                    self.record(edge.points)
                    break
            else:
                lanes.append(edge)
        for edge in sorted(lanes, key=lambda e: self.target(e)[1] - e.start.y):
            candidates = [self.lane_route(edge, side) for side in (-1, 1)]  # skips run on the left, as drawn by hand
            edge.points = _simplify(next((c for c in candidates if self.clear(c)), candidates[0]))
            self.record(edge.points)

    @staticmethod
    def target(edge: Edge) -> Point:
        """Where the free part of an edge ends: the top of its identity column, or its end."""
        return (edge.via[0], edge.via[1]) if edge.via else edge.end

    @staticmethod
    def tail(edge: Edge) -> list[Point]:
        if edge.via is None:
            return [edge.end]
        x, y_in, y_out = edge.via
        return [(x, y_in), (x, y_out), (edge.end[0], y_out), edge.end]

    def plain_routes(self, edge: Edge) -> Iterator[list[Point]]:
        (x0, y0), (x1, y1) = (edge.start.x, edge.start.y), self.target(edge)
        tail = self.tail(edge)
        if abs(x0 - x1) < EPS:
            yield [(x0, y0), *tail]
        # A bus just above the target (an identity column's top is one already), or just below the source.
        for y in (y1 if edge.via else y1 - GAP / 2, y0 + GAP / 2):
            if y0 - EPS <= y <= y1 + EPS:
                yield [(x0, y0), (x0, y), (x1, y), *tail]

    def lane_route(self, edge: Edge, side: int) -> list[Point]:
        (x0, y0), (x1, y1) = (edge.start.x, edge.start.y), self.target(edge)
        top, bottom = y0 + GAP / 2, y1 if edge.via else y1 - GAP / 2
        near = [v for b in self.boxes if b.y < bottom and b.bottom > top for v in (b.left, b.right)]
        near += [x for x, r0, r1 in self.runs if r0 < bottom and r1 > top]
        lane = min(near, default=x0) - LANE_GAP if side < 0 else max(near, default=x0) + LANE_GAP
        tail = self.tail(edge)
        return [(x0, y0), (x0, top), (lane, top), (lane, bottom), (x1, bottom), *tail]


def _length(points: list[Point]) -> float:
    return sum(abs(bx - ax) + abs(by - ay) for (ax, ay), (bx, by) in _segments(points))


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[1] and a[1] > b[0] and a[2] < b[3] and a[3] > b[2]


def _place_labels(column: Column) -> None:
    """One shape label per port, beside a vertical segment of its edge, clear of boxes and other labels."""
    height = _line_height(LABEL_PT)
    labelled: set[int] = set()
    for edge in column.edges:
        if not edge.label or id(edge.start) in labelled:
            continue
        labelled.add(id(edge.start))
        width = text_width(edge.label, LABEL_PT)
        verticals = [(a, b) for a, b in _segments(edge.points) if abs(a[0] - b[0]) < EPS and abs(a[1] - b[1]) > EPS]
        if not verticals:
            continue
        candidates = [
            Label(a[0] + 0.08 if side > 0 else a[0] - 0.08 - width, (a[1] + b[1]) / 2, width, height, edge.label)
            for a, b in verticals
            for side in (1, -1)
        ]

        def free(label: Label, edge: Edge = edge) -> bool:
            others = [e for e in column.edges if e is not edge]
            return (
                not any(_overlap(label.rect, b.rect) for b in column.boxes)
                and not any(_overlap(label.rect, o.rect) for o in column.labels)
                and not any(segment_hits(a, b, label.rect, inset=0) for e in others for a, b in _segments(e.points))
            )

        column.labels.append(next((c for c in candidates if free(c)), candidates[0]))


# --- columns -------------------------------------------------------------------------------------


def _flatten(placer: _Placer, root: ShapedSeq) -> ShapedSeq:
    """The root with every expanded chain (a block use or repeat drawn layer by layer) spliced in, so that
    columns can be cut inside it."""

    def parts(node: ShapedNode) -> list[ShapedNode]:
        if isinstance(node, ShapedSeq) and node.children and node.is_chain and not placer.collapsed(node, 1):
            return [p for child in node.children for p in parts(child)]
        return [node]

    children: list[ShapedNode] = []
    sources: list[tuple[int, ...] | None] = []
    position = [0]  # position[p]: where root value p (0: the input, k + 1: child k's output) is now
    for child, source in zip(root.children, _sources(root), strict=True):
        spliced = parts(child) if source is None else [child]
        children += spliced
        sources += [None] * len(spliced)
        if source is not None:
            sources[-1] = tuple(position[p] for p in source)
        position.append(len(children))
    return ShapedSeq(children, sources, [None] * len(children), role=Role.ROOT, path=root.path)


def _sources(seq: ShapedSeq) -> list[tuple[int, ...] | None]:
    return list(seq.sources) if seq.sources else [None] * len(seq.children)


def _cuts(root: ShapedSeq) -> list[int]:
    """The positions k where the root may be cut before child k: no named tap is read across the cut."""
    reads = [(j,) if source is None else source for j, source in enumerate(_sources(root))]
    # Value j is child j - 1's output (0: the input); a column receives one value, its first child's input.
    return [
        k
        for k in range(1, len(root.children))
        if all(p >= k for p in reads[k]) and all(p > k for r in reads[k + 1 :] for p in r)
    ]


def _split(heights: list[float], cuts: list[int], parts: int, extra: tuple[float, float]) -> list[int] | None:
    """Cut positions that split the children into `parts` columns with the smallest tallest column."""
    n = len(heights)
    first, last = extra
    below = [0.0]  # below[i]: the height of children 0..i-1
    for h in heights:
        below.append(below[-1] + h)

    def column_h(i: int, j: int) -> float:
        h = below[j] - below[i] + GAP * (j - i - 1)
        return h + (first if i == 0 else GAP) + (last if j == n else 0.0)

    starts = [c for c in cuts if 0 < c < n]

    @cache
    def solve(i: int, k: int) -> float:
        """The smallest tallest column of children i.. in k columns."""
        if k == 1:
            return column_h(i, n)
        return min((max(column_h(i, j), solve(j, k - 1)) for j in starts if j > i), default=float("inf"))

    tallest = solve(0, parts)
    if tallest == float("inf"):
        return None
    # Fill each column up to that height, so that the columns read evenly from the first.
    split, i = [], 0
    while True:
        j = max((c for c in [*cuts, n] if c > i and column_h(i, c) <= tallest + EPS), default=None)
        if j is None or j == n:
            return split
        split.append(j)
        i = j


def _columns(placer: _Placer, root: ShapedSeq, io_heights: tuple[float, float]) -> list[int]:
    """Where to start new columns: none when the network fits a screen's height, else the split whose
    picture is closest to a screen's shape."""
    sizes = [placer.size(c, 1) for c in root.children]
    heights = [h for _, h in sizes]
    first, last = io_heights[0] + GAP, GAP + io_heights[1]
    one = sum(heights) + GAP * (len(heights) - 1) + first + last
    if one <= MAX_COLUMN_H or not heights:
        return []
    cuts = _cuts(root)
    best: tuple[float, list[int]] = (one, [])
    for parts in range(2, min(len(heights), MAX_COLUMNS) + 1):
        split = _split(heights, cuts, parts, (first, last))
        if split is None:
            break
        bounds = [0, *split, len(heights)]
        widths = [max(w for w, _ in sizes[a:b]) + 1.0 for a, b in pairwise(bounds)]
        tallest = max(
            sum(heights[a:b]) + GAP * (b - a - 1) + (first if a == 0 else GAP) + (last if b == len(heights) else 0)
            for a, b in pairwise(bounds)
        )
        score = max(tallest, (sum(widths) + GUTTER * (parts - 1)) / SCREEN_ASPECT)
        if score < best[0] - EPS:
            best = (score, split)
    if best[0] > 0.8 * one:  # a lopsided split (taps allow few cuts) is no easier to read than one column
        return []
    return best[1]


def layout(net: NetShape, *, style: str = "graph", detail: bool = False) -> Layout:
    """Lay out the picture of `net`: boxes, routed edges and labels, in layout units."""
    if style not in STYLES:
        raise UsageError(f"unknown style '{style}'; choose from {', '.join(STYLES)}")
    probe = _Placer(detail, style, MAX_BOX_W)
    texts = [box_text(n) for n in _collapsed_nodes(probe, net.root, 0)]
    natural = [max(text_width(t, TITLE_PT, True), text_width(d, TEXT_PT)) + 2 * PAD_X for t, d, _ in texts]
    box_w = min(max([MIN_BOX_W, *natural]), MAX_BOX_W)
    placer = _Placer(detail, style, box_w)
    shape_in, shape_out = format_shape(net.input_shape), format_shape(net.output_shape)
    in_text, out_text = fit_text("input", shape_in, box_w), fit_text("output", shape_out, box_w)
    root = _flatten(placer, net.root)
    starts = _columns(placer, root, (in_text.height, out_text.height))
    bounds = [0, *starts, len(root.children)]

    columns: list[Column] = []
    values: list[Port] = []
    for c, (a, b) in enumerate(pairwise(bounds)):
        placer.column = column = Column()
        if c == 0:
            box = placer.add_box(Box(0.0, 0.0, box_w, in_text.height, in_text, "#ffffff"))
            values = [Port(0.0, box.bottom, shape_in)]
            y = box.bottom + GAP
        else:
            column.entry = Port(0.0, 0.0, values[a].shape)
            values[a] = column.entry  # the only value read across a cut (see _cuts)
            y = GAP
        current = [values[a]]
        for child, source in zip(root.children[a:b], _sources(root)[a:b], strict=True):
            feed = current if source is None else [values[j] for j in source]
            out = placer.place(child, 0.0, y, 1, feed)
            values.append(out)
            current = [out]
            y += placer.size(child, 1)[1] + GAP
        if c == len(bounds) - 2:
            box = placer.add_box(Box(0.0, y, box_w, out_text.height, out_text, "#ffffff"))
            placer.connect(current, 0.0, y)
        column.exit = current[0]
        _Router(column.boxes).route(column.edges)
        _place_labels(column)
        columns.append(column)

    # Side by side, each column's left beyond the previous one's right.
    right = None
    for column in columns:
        lo, hi = column.extent()
        dx = 0.0 if right is None else right + GUTTER - lo
        column.shift(dx)
        right = hi + dx
    connectors = []
    for prev, nxt in pairwise(columns):
        assert prev.exit is not None and nxt.entry is not None
        gutter = (prev.extent()[1] + nxt.extent()[0]) / 2
        p, q = prev.exit, nxt.entry
        points = [(p.x, p.y), (p.x, p.y + GAP / 2), (gutter, p.y + GAP / 2), (gutter, -GAP / 2), (q.x, -GAP / 2)]
        connectors.append(Edge(p, (q.x, q.y), arrow=False, points=_simplify([*points, (q.x, q.y)])))

    title = f"{net.name}: {net.total_params:,} parameters, {net.macs:,} MACs"
    xs = [v for c in columns for v in c.extent()] + [x for e in connectors for x, _ in e.points]
    left = min(xs)
    right = max(max(xs), left + text_width(title, TITLE_PT + 1))
    bottom = max(b.bottom for c in columns for b in c.boxes)
    return Layout(columns, connectors, title, (left, -1.0, right, bottom))


def _collapsed_nodes(placer: _Placer, node: ShapedNode, depth: int) -> Iterator[ShapedNode]:
    if placer.collapsed(node, depth):
        yield node
    elif isinstance(node, ShapedMerge):
        for branch in node.branches:
            yield from _collapsed_nodes(placer, branch, depth + 1)
    else:
        for child in node.children:
            yield from _collapsed_nodes(placer, child, depth + 1)


# --- drawing -------------------------------------------------------------------------------------


def render(net: NetShape, *, style: str = "graph", detail: bool = False) -> Any:
    """The matplotlib Figure of the picture (Agg canvas; not shown)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as MplPath

    plan = layout(net, style=style, detail=detail)
    margin = 0.4
    left, top, right, bottom = plan.bounds
    fig = Figure(figsize=((right - left + 2 * margin) * INCH, (bottom - top + 2 * margin) * INCH), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(left - margin, right + margin)
    ax.set_ylim(bottom + margin, top - margin)
    ax.axis("off")
    ax.text(left, top, plan.title, fontsize=TITLE_PT + 1, ha="left", va="center", color="#333333", parse_math=False)
    for box in plan.boxes:
        rounding = 0.2 if box.round else 0.08
        ax.add_patch(
            FancyBboxPatch(
                (box.left, box.y), box.w, box.h, boxstyle=f"round,pad=0,rounding_size={rounding}",
                fc=box.color, ec="#555555", lw=0.8, zorder=2,
            )
        )  # fmt: skip
        text = box.text
        y = box.y + PAD_Y + _line_height(text.title_size) / 2
        ax.text(box.x, y, text.title, ha="center", va="center", fontsize=text.title_size, weight="bold", zorder=3,
                parse_math=False)  # fmt: skip
        y += _line_height(text.title_size) / 2
        for line in text.lines:
            y += _line_height(text.size) / 2
            ax.text(box.x, y, line, ha="center", va="center", fontsize=text.size, color="#333", zorder=3,
                    parse_math=False)  # fmt: skip
            y += _line_height(text.size) / 2
    for edge in plan.edges:
        ax.add_patch(
            FancyArrowPatch(path=MplPath(edge.points), arrowstyle="-|>" if edge.arrow else "-", mutation_scale=7,
                            lw=0.7, color="#444444", shrinkA=0, shrinkB=0, zorder=1)
        )  # fmt: skip
    for label in plan.labels:
        ax.text(label.x, label.y, label.text, fontsize=LABEL_PT, color="#1f5fa8", va="center", ha="left",
                parse_math=False)  # fmt: skip
    return fig


def draw(spec: Spec | NetShape | str | Path, path: str | Path, *, style: str = "graph", detail: bool = False) -> Path:
    """Draw the network to `path`, in any format matplotlib writes (from the suffix); returns the path."""
    path = Path(path)
    formats = supported_formats()
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in formats:
        listing = ", ".join(f".{s}" for s in sorted(formats))
        what = f"'.{suffix}' is not a picture format matplotlib writes" if suffix else "the name has no suffix"
        raise UsageError(f"{path}: {what}; name the file with one of: {listing}")
    if style not in STYLES:
        raise UsageError(f"unknown style '{style}'; choose from {', '.join(STYLES)}")
    if not path.parent.exists():
        raise UsageError(f"{path.parent}: no such folder")
    net = spec if isinstance(spec, NetShape) else infer_shapes(spec)
    _save(render(net, style=style, detail=detail), path)
    return path


def _save(fig: Any, path: Path) -> None:
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "netspec"}):  # real <text>, stable ids
        try:
            fig.savefig(buffer, format=path.suffix.lstrip(".").lower(), dpi=DPI)
        except Exception as exc:  # e.g. .pgf without a LaTeX installation
            raise NetspecError(f"{path}: matplotlib cannot write this format here: {exc}") from None
    atomic_write_bytes(path, buffer.getvalue())
