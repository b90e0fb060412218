"""`netspec draw`: a valid PNG and SVG for every zoo spec, naming what the network is made of."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import netspec
from tests.conftest import SPECS, ZOO, run_cli

MERGE_SYMBOLS = {"concat": "concat", "add": "+", "multiply": "×", "residual": "+"}


def _svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()  # raises on anything that is not well-formed XML
    assert root.tag.endswith("svg")
    return ["".join(el.itertext()) for el in root.iter() if el.tag.endswith("text")]


@pytest.mark.parametrize("name", ZOO)
def test_draw_png_and_detailed_svg(name: str, tmp_path: Path):
    from PIL import Image

    png = netspec.draw(SPECS / f"{name}.yaml", tmp_path / f"{name}.png")
    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG" and min(image.size) > 100
    svg = netspec.draw(SPECS / f"{name}.yaml", tmp_path / f"{name}.svg", detail=True)
    texts = _svg_texts(svg)
    net = netspec.infer_shapes(SPECS / f"{name}.yaml")
    for info in net.layers:  # every layer kind is named, every merge shown by its symbol
        assert MERGE_SYMBOLS.get(info.kind, info.kind) in texts, info.kind
    assert "×".join(map(str, net.output_shape)) in texts  # shapes label the edges
    assert any(t.startswith(f"{name}: ") for t in texts)


def test_collapsed_blocks_and_expanded_layers(tmp_path: Path):
    collapsed = _svg_texts(netspec.draw(SPECS / "googlenet.yaml", tmp_path / "g.svg"))
    assert collapsed.count("inception") == 9  # one box per block use
    assert "concat" not in collapsed
    detailed = _svg_texts(netspec.draw(SPECS / "googlenet.yaml", tmp_path / "g2.svg", detail=True))
    assert detailed.count("concat") == 9 and "inception" not in detailed
    blocks = _svg_texts(netspec.draw(SPECS / "unet_small.yaml", tmp_path / "u.svg", style="blocks"))
    assert blocks.count("concat (2 branches)") == 3


def test_cli_draw(tmp_path: Path):
    out = tmp_path / "lenet.svg"
    result = run_cli("draw", "specs/lenet.yaml", "--out", str(out), "--detail")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {out}\n"
    assert "conv2d" in _svg_texts(out)
    bad = run_cli("draw", "specs/lenet.yaml", "--out", str(tmp_path / "lenet.jpg"))
    assert bad.returncode == 2 and "write a .png or an .svg file" in bad.stderr
