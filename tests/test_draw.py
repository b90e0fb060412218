"""`netspec draw`: a valid PNG and SVG for every zoo spec, naming what the network is made of."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from itertools import pairwise
from pathlib import Path

import pytest

import netspec
from netspec.diagram import MERGE_SYMBOLS
from tests.conftest import SPECS, TIMM_ZOO, ZOO, run_cli


def _svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()  # raises on anything that is not well-formed XML
    assert root.tag.endswith("svg")
    return ["".join(el.itertext()) for el in root.iter() if el.tag.endswith("text")]


# The timm specs' hundreds of boxes take 40-110 s each to lay out and check on 2 cores: they run under -m slow.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in TIMM_ZOO else n for n in ZOO])
def test_draw_png_and_detailed_svg(name: str, tmp_path: Path, monkeypatch):
    from PIL import Image

    fig, renderer, png = _figure(monkeypatch, tmp_path, name)
    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG" and min(image.size) > 100
    _assert_text_fits(fig, renderer)
    _assert_edges_clear(fig, renderer)
    svg = netspec.draw(SPECS / f"{name}.yaml", tmp_path / f"{name}.svg", detail=True)
    texts = _svg_texts(svg)
    net = netspec.infer_shapes(SPECS / f"{name}.yaml")
    for info in net.layers:  # every layer kind is named, every merge shown by its symbol
        assert MERGE_SYMBOLS.get(info.kind, info.kind) in texts, info.kind
    assert "×".join(map(str, net.output_shape)) in texts  # shapes label the edges
    assert any(t.startswith(f"{name}: ") for t in texts)
    fig, renderer, _ = _figure(monkeypatch, tmp_path, name, detail=True)
    _assert_text_fits(fig, renderer)
    _assert_edges_clear(fig, renderer)


def test_collapsed_blocks_and_expanded_layers(tmp_path: Path):
    collapsed = _svg_texts(netspec.draw(SPECS / "d2l_googlenet.yaml", tmp_path / "g.svg"))
    assert collapsed.count("inception") == 9  # one box per block use
    assert "concat" not in collapsed
    detailed = _svg_texts(netspec.draw(SPECS / "d2l_googlenet.yaml", tmp_path / "g2.svg", detail=True))
    assert detailed.count("concat") == 9 and "inception" not in detailed
    blocks = _svg_texts(netspec.draw(SPECS / "unet_small.yaml", tmp_path / "u.svg", style="blocks"))
    assert blocks.count("concat (2 branches)") == 3


def test_cli_draw(tmp_path: Path):
    out = tmp_path / "lenet.svg"
    result = run_cli("draw", "specs/lenet.yaml", "--out", str(out), "--detail")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {out}\n"
    assert "conv2d" in _svg_texts(out)
    jpeg = run_cli("draw", "specs/lenet.yaml", "--out", str(tmp_path / "lenet.jpg"))
    assert jpeg.returncode == 0, jpeg.stderr
    assert (tmp_path / "lenet.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    bad = run_cli("draw", "specs/lenet.yaml", "--out", str(tmp_path / "lenet.xyz"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"error: {tmp_path / 'lenet.xyz'}: '.xyz' is not a picture format matplotlib writes")
    assert ".jpg" in bad.stderr and ".pdf" in bad.stderr and ".webp" in bad.stderr  # the list comes from matplotlib
    assert not (tmp_path / "lenet.xyz").exists()


# What each format's file starts with; the list of formats itself is matplotlib's.
MAGIC = {
    "png": b"\x89PNG",
    "jpg": b"\xff\xd8\xff",
    "jpeg": b"\xff\xd8\xff",
    "pdf": b"%PDF",
    "eps": b"%!PS-Adobe",
    "ps": b"%!PS-Adobe",
    "svg": b"<?xml",
    "svgz": b"\x1f\x8b",
    "tif": b"II*\x00",
    "tiff": b"II*\x00",
    "webp": b"RIFF",
    "gif": b"GIF8",
}


def test_draw_writes_every_format_matplotlib_writes(tmp_path: Path):
    from matplotlib.backend_bases import FigureCanvasBase

    from netspec.errors import NetspecError

    formats = FigureCanvasBase.get_supported_filetypes()
    assert {"png", "svg", "pdf", "jpg", "jpeg", "eps", "ps", "tif", "webp"} <= set(formats)
    net = netspec.infer_shapes(SPECS / "lenet.yaml")
    written = []
    for suffix in formats:
        path = tmp_path / f"lenet.{suffix.upper() if suffix == 'pdf' else suffix}"  # the suffix's case is free
        try:
            netspec.draw(net, path)
        except NetspecError as exc:  # e.g. .pgf needs a LaTeX installation: one message naming the file
            assert str(exc).startswith(f"{path}: matplotlib cannot write this format here: "), exc
            assert not path.exists()
            continue
        data = path.read_bytes()
        assert data.startswith(MAGIC.get(suffix, b"")) and len(data) > 100, suffix
        written.append(suffix)
    assert {"png", "svg", "pdf", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp"} <= set(written)


# --- geometry of the rendered figure: what a reader sees --------------------------------------------------


def _figure(monkeypatch, folder: Path, spec: str, **options):
    """Draw a spec and return the matplotlib figure that was saved, with a renderer for its extents."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    import netspec.diagram

    saved = []
    original = netspec.diagram._save
    monkeypatch.setattr(netspec.diagram, "_save", lambda fig, path: (saved.append(fig), original(fig, path)))
    path = netspec.draw(SPECS / f"{spec}.yaml", folder / f"{spec}.png", **options)
    (fig,) = saved
    renderer = FigureCanvasAgg(fig).get_renderer()
    return fig, renderer, path


def _boxes(fig, renderer):
    from matplotlib.patches import FancyBboxPatch

    ax = fig.axes[0]
    return [p.get_window_extent(renderer) for p in ax.patches if isinstance(p, FancyBboxPatch)]


def _inside(bbox, x: float, y: float) -> bool:
    return bbox.x0 < x < bbox.x1 and bbox.y0 < y < bbox.y1


def _segment_crosses(a, b, box, inset: float) -> bool:
    """Liang-Barsky: does the segment a-b enter the box shrunk by `inset` pixels?"""
    (x0, y0), (dx, dy) = a, (b[0] - a[0], b[1] - a[1])
    lo, hi = 0.0, 1.0
    for p, q in (
        (-dx, x0 - (box.x0 + inset)),
        (dx, (box.x1 - inset) - x0),
        (-dy, y0 - (box.y0 + inset)),
        (dy, (box.y1 - inset) - y0),
    ):
        if p == 0:
            if q < 0:
                return False
        elif p < 0:
            lo = max(lo, q / p)
        else:
            hi = min(hi, q / p)
        if lo > hi:
            return False
    return True


def _assert_text_fits(fig, renderer) -> None:
    """Box text lies within its box; shape labels and the title lie on no box; nothing is shrunk below 5 pt."""
    ax = fig.axes[0]
    boxes = _boxes(fig, renderer)
    texts = [t for t in ax.texts if t.get_text()]
    assert texts and boxes
    for text in texts:
        extent = text.get_window_extent(renderer)
        anchor = ax.transData.transform(text.get_position())
        owner = next((b for b in boxes if _inside(b, *anchor)), None)
        if owner is not None:
            assert (
                extent.x0 >= owner.x0 - 0.5
                and extent.x1 <= owner.x1 + 0.5
                and extent.y0 >= owner.y0 - 0.5
                and extent.y1 <= owner.y1 + 0.5
            ), f"{text.get_text()!r} ({extent}) spills out of its box ({owner})"
        else:
            for box in boxes:
                overlaps = extent.x0 < box.x1 - 1 and extent.x1 > box.x0 + 1 and extent.y0 < box.y1 - 1
                assert not (overlaps and extent.y1 > box.y0 + 1), f"label {text.get_text()!r} lies on a box"
    assert min(t.get_fontsize() for t in texts) >= 5  # fitted by wrapping and shortening, not shrunk to nothing


def _assert_edges_clear(fig, renderer, sources: int = 1) -> None:
    """No edge (line or arrow head) passes through any box: edges only touch the boxes they connect, at their
    borders. Every box but the `sources` (the input, and layers that read nothing, such as a `parameter`) has an
    edge in."""
    from matplotlib.patches import FancyArrowPatch

    ax = fig.axes[0]
    boxes = _boxes(fig, renderer)
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) >= len(boxes) - sources
    for arrow in arrows:
        path = ax.transData.transform_path(arrow.get_path())
        for polyline in path.to_polygons(closed_only=False):
            for a, b in pairwise(polyline):
                crossed = [box for box in boxes if _segment_crosses(a, b, box, inset=2)]
                assert not crossed, f"an edge runs from {a} to {b} through a box at {crossed[0]}"


def test_inception_text_fits_its_box(monkeypatch, tmp_path: Path):
    # The collapsed Inception boxes carry six parameters and a summary; they spilled past the box.
    fig, renderer, _ = _figure(monkeypatch, tmp_path, "d2l_googlenet")
    _assert_text_fits(fig, renderer)
    lines = [t.get_text() for t in fig.axes[0].texts]
    first = lines.index("c1=64, c2a=96, c2b=128,")  # wrapped evenly at commas, the summary on its own line
    assert lines[first : first + 3] == ["c1=64, c2a=96, c2b=128,", "c3a=16, c3b=32, c4=32", "14 layers, 163,696 params"]
    assert not any("…" in line for line in lines)  # nothing had to be cut


EDGE_CASES = [
    ("unet_small", {}),  # the skips pass three levels of boxes
    ("unet_small", {"style": "blocks"}),
    ("d2l_googlenet", {"detail": True}),  # short branches beside long ones
]


@pytest.mark.parametrize(("spec", "options"), EDGE_CASES, ids=[f"{s}-{o}" for s, o in EDGE_CASES])
def test_edges_run_around_boxes(monkeypatch, tmp_path: Path, spec: str, options: dict):
    fig, renderer, _ = _figure(monkeypatch, tmp_path, spec, **options)
    _assert_edges_clear(fig, renderer)
    _assert_text_fits(fig, renderer)


def test_long_networks_wrap_into_columns_that_fit_a_screen(monkeypatch, tmp_path: Path):
    from PIL import Image

    fig, _, path = _figure(monkeypatch, tmp_path, "d2l_googlenet", detail=True)
    with Image.open(path) as image:
        width, height = image.size
    assert height <= 2400, f"{width}×{height} px"  # was 6,721 px tall in one column
    assert width <= 2 * SCREEN_ASPECT * height  # and not one long row either
    assert min(t.get_fontsize() for t in fig.axes[0].texts) >= 5  # by layout, not by scaling the text down
    _, _, lenet = _figure(monkeypatch, tmp_path, "lenet")  # a short network stays one column, read top to bottom
    with Image.open(lenet) as image:
        assert image.size[1] > 2 * image.size[0]


SCREEN_ASPECT = 1.6


def test_generated_specs_draw_cleanly_in_every_style():
    """The property tests' generated specs (taps, merges in both forms, blocks): every valid one draws with its
    text in its boxes and no edge through a box, collapsed, detailed and as blocks."""
    from hypothesis import HealthCheck, example, given, settings
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from netspec.diagram import render
    from netspec.spec import validate_spec
    from tests.test_properties import spec_data

    drawn = []

    # derandomize: the same 150 examples each run, so CI is repeatable; a case found otherwise becomes an @example.
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    @given(spec_data())
    # A spec whose one layer reads nothing (a random CI run found it): its input box has no edge out.
    @example({"name": "generated", "input": [1], "layers": [{"parameter": {"shape": [1]}}]})
    def check(data: dict) -> None:
        try:
            net = netspec.infer_shapes(validate_spec(data))
        except netspec.SpecError:
            return
        for options in ({}, {"detail": True}, {"style": "blocks"}):
            fig = render(net, **options)
            renderer = FigureCanvasAgg(fig).get_renderer()
            _assert_text_fits(fig, renderer)
            _assert_edges_clear(fig, renderer, sources=1 + sum(info.layer.kind == "parameter" for info in net.layers))
        drawn.append(net)

    check()
    assert len(drawn) >= 5
