"""Language conveniences that real specs need: repeat indices, functions and plain arithmetic in expressions,
dims counted as torch counts them."""

from __future__ import annotations

import pytest
import torch

import netspec


def test_repeat_copies_know_their_index_and_count():
    spec = """
name: t
input: [8]
layers:
  - repeat:
      times: 3
      layers:
        - linear: {out_features: "8 * ($i + 1)"}
        - dropout: {p: "0.1 * $i / ($n - 1)"}
"""
    net = netspec.infer_shapes(spec)
    assert [row.output_shape for row in net.layers if row.kind == "linear"] == [(8,), (16,), (24,)]
    assert [row.layer.p for row in net.layers if row.kind == "dropout"] == pytest.approx([0.0, 0.05, 0.1])


def test_index_inside_a_block_and_functions_and_plain_arithmetic():
    spec = """
name: t
input: [3, 8, 8]
vars: {width: 10}
blocks:
  stage:
    params: {depth: 2, first: 0}
    layers:
      - repeat:
          times: $depth
          layers: [conv2d: {out_channels: "max(4, round(0.5 * $width) + $first + $i)", kernel_size: 1}]
layers:
  - stage: {first: 1}
  - batchnorm: {momentum: 1 - 0.9997}
"""
    net = netspec.infer_shapes(spec)
    assert [row.output_shape[0] for row in net.layers if row.kind == "conv2d"] == [6, 7]
    assert net.layers[-1].layer.momentum == pytest.approx(0.0003)


def test_text_that_is_not_arithmetic_stays_text():
    spec = "name: t\ninput: [3, 8, 8]\nlayers:\n  - conv2d: {out_channels: 4, kernel_size: 3, padding: same}\n"
    assert netspec.infer_shapes(spec).output_shape == (4, 8, 8)


def test_index_outside_a_repeat_is_an_unknown_variable():
    with pytest.raises(netspec.SpecError, match=r"unknown variable \$i"):
        netspec.infer_shapes("name: t\ninput: [8]\nlayers:\n  - linear: {out_features: $i}\n")


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        ("flatten: {start_dim: 2}", (4, 64)),  # N×4×8×8 -> N×4×64
        ("permute: {dims: [0, 2, 3, 1]}", (8, 8, 4)),  # channels last
        ("transpose: {dim0: 1, dim1: -1}", (8, 8, 4)),
        ("slice: {dim: 1, index: 0}", (8, 8)),  # x[:, 0]
        ("slice: {dim: 1, start: 1, step: 2}", (2, 8, 8)),  # x[:, 1::2]
        ("reshape: {shape: [4, -1]}", (4, 64)),
        ("linear: {out_features: 5}", (4, 8, 5)),  # the last dimension, as torch's
    ],
)
def test_rank_changing_kinds_follow_torch(layer: str, shape: tuple[int, ...]):
    model = netspec.build(f"name: t\ninput: [4, 8, 8]\nlayers:\n  - {layer}\n")
    assert model.net_shape.output_shape == shape
    assert tuple(model(torch.randn(2, 4, 8, 8)).shape) == (2, *shape)


def test_learned_tensors_are_parameters_of_their_module_before_its_children():
    spec = """
name: t
input: [3, 8, 8]
layers:
  - conv2d: {out_channels: 4, kernel_size: 1}
  - multiply:
      - [{parameter: {shape: [4, 1, 1], batch_dim: false, init: constant, value: 0.5}, as: scale}]
      - identity
"""
    model = netspec.build(spec)
    assert list(model.state_dict())[:3] == ["scale", "conv.weight", "conv.bias"]
    assert tuple(model.scale.shape) == (4, 1, 1)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model(x), 0.5 * model.conv(x))
