"""Blocks that real families need (issue 29): conditional entries (`if:`), block parameters that name a layer
with its arguments, and the error messages that used to mislead, each located and naming the real problem."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import netspec
from netspec.cli import main
from netspec.compiler import transfer_state_dict
from netspec.config import TrainConfig
from netspec.errors import CheckpointError, SpecError, UsageError
from netspec.expr import evaluate
from netspec.weights import start_from

ROOT = Path(__file__).resolve().parents[1]

# A bottleneck whose depthwise downsampling and squeeze-excite are optional; `from: se` reads the squeeze-excite's
# output where it is kept and what it would have read (the depthwise output) where it is left out.
OPTIONAL = """
name: t
input: [8, 8, 8]
blocks:
  unit:
    params: {stride: 1, se: 0}
    layers:
      - conv2d: {out_channels: 8, kernel_size: 3, stride: $stride, padding: 1, groups: 8}
        if: $stride > 1
      - multiply: [identity, [adaptive_avgpool2d, conv2d: {out_channels: 8, kernel_size: 1}, sigmoid]]
        if: $se > 0
        as: se
      - concat: [identity, identity]
        from: [se, input]
        if: $stride == 1
      - conv2d: {out_channels: 8, kernel_size: 1}
layers:
  - unit
  - unit: {se: 1}
  - unit: {stride: 2}
"""


def _kinds(net: netspec.NetShape) -> list[str]:
    return [info.layer.kind for info in net.layers if info.depth == 0 and info.layer is not None]


def test_if_leaves_an_entry_out_and_from_its_name_reads_what_it_would_have_read():
    net = netspec.infer_shapes(OPTIONAL)
    uses = [[info for info in net.layers if info.path.startswith(f"layers[{k}].")] for k in range(3)]
    kinds = [[info.layer.kind for info in use if info.depth == 0] for use in uses]
    assert kinds == [["concat", "conv2d"], ["multiply", "concat", "conv2d"], ["conv2d", "conv2d"]]
    # Left out, `se` stands for the block's input; kept, for the squeeze-excite's output.
    concats = [next(info for info in use if info.layer.kind == "concat") for use in uses[:2]]
    assert [c.reads for c in concats] == [("input", "input"), ("se", "input")]
    assert concats[0].output_shape == (16, 8, 8)
    assert uses[2][0].output_shape == (8, 4, 4)  # the downsampling is there only with stride 2
    # The network runs as its shapes say, and a left-out entry has no module and no parameters.
    model = netspec.build(OPTIONAL)
    assert model(torch.randn(2, 8, 8, 8)).shape == (2, 8, 4, 4)
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 1


def test_if_at_the_top_level_follows_a_variable_and_set():
    text = "name: t\ninput: [4]\nvars: {drop: false}\nlayers:\n  - linear: {out_features: 3}\n  - dropout:\n    if: $drop\n"
    assert _kinds(netspec.infer_shapes(text)) == ["linear"]
    assert _kinds(netspec.infer_shapes(netspec.as_spec(text, {"drop": True}))) == ["linear", "dropout"]


def test_a_left_out_entry_is_not_checked():
    # A squeeze to `$se * 8` = 0 channels makes no layer; left out where se is 0, it is never built, so no error.
    squeeze = "conv2d: {out_channels: 8, kernel_size: 1}, sigmoid"
    text = OPTIONAL.replace(squeeze, squeeze.replace("8", "$se * 8", 1))
    assert netspec.infer_shapes(text).total_params == netspec.infer_shapes(OPTIONAL).total_params
    with pytest.raises(SpecError, match=r"layers\[0\]\.unit\[1\]\.branch\[1\]\[1\] conv2d: out_channels: input should"):
        netspec.infer_shapes(text.replace("        if: $se > 0\n", ""))


def test_conditions_are_the_one_expression_language():
    env = {"se": 0.25, "stride": 2, "relu": True}
    unknown = str
    assert evaluate("$se > 0 and $stride == 2", env, unknown) is True
    assert evaluate("not $relu or 1 < $stride <= 2", env, unknown) is True
    assert evaluate("$se * 4 != 1", env, unknown) is False
    with pytest.raises(ValueError, match="comparisons"):
        evaluate("$se in [1]", env, unknown)


def test_a_block_parameter_names_a_layer_with_its_arguments():
    text = """
name: t
input: [3, 8, 8]
blocks:
  se:
    params: {ch: null}
    layers:
      - multiply: [identity, [adaptive_avgpool2d, conv2d: {out_channels: $ch, kernel_size: 1}, relu,
                              conv2d: {out_channels: 8, kernel_size: 1}, sigmoid]]
  unit:
    params: {act: relu, attention: identity}
    layers:
      - conv2d: {out_channels: 8, kernel_size: 3, padding: 1}
      - $act
      - $attention
layers:
  - unit: {act: {leaky_relu: {negative_slope: 0.1}}, attention: {se: {ch: 4}}}
  - unit
"""
    model = netspec.build(text)
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert [m.negative_slope for m in leaky] == [0.1]
    squeeze = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [m.out_channels for m in squeeze] == [4, 8]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2  # the se's own, and the second use's act


# GhostNet's bottleneck written as it had to be before `if:`: one block per variant (plain, downsampling, with
# squeeze-excite, both), each a copy of the others' common layers.
GHOST_COPIES = """
name: ghostnet_small
input: [3, 32, 32]
blocks:
  ghost:
    params: {out: null, act: relu}
    layers:
      - conv2d: {out_channels: $out // 2, kernel_size: 1, bias: false}
      - batchnorm
      - $act
      - concat:
          - identity
          - [conv2d: {out_channels: $out // 2, kernel_size: 3, padding: 1, groups: $out // 2, bias: false},
             batchnorm, $act]
  squeeze_excite:
    params: {ch: null, squeeze: null}
    layers:
      - multiply:
          - identity
          - [adaptive_avgpool2d, conv2d: {out_channels: $squeeze, kernel_size: 1}, relu,
             conv2d: {out_channels: $ch, kernel_size: 1}, hardsigmoid]
  bottleneck:
    params: {mid: null, out: null}
    layers:
      - residual:
          layers: [ghost: {out: $mid}, ghost: {out: $out, act: identity}]
  bottleneck_down:
    params: {mid: null, out: null, stride: 2}
    layers:
      - residual:
          layers:
            - ghost: {out: $mid}
            - conv2d: {out_channels: $mid, kernel_size: 3, stride: $stride, padding: 1, groups: $mid, bias: false}
            - batchnorm
            - ghost: {out: $out, act: identity}
  bottleneck_se:
    params: {mid: null, out: null, se: null}
    layers:
      - residual:
          layers:
            - ghost: {out: $mid}
            - squeeze_excite: {ch: $mid, squeeze: "max(4, int($mid * $se))"}
            - ghost: {out: $out, act: identity}
  bottleneck_down_se:
    params: {mid: null, out: null, stride: 2, se: null}
    layers:
      - residual:
          layers:
            - ghost: {out: $mid}
            - conv2d: {out_channels: $mid, kernel_size: 3, stride: $stride, padding: 1, groups: $mid, bias: false}
            - batchnorm
            - squeeze_excite: {ch: $mid, squeeze: "max(4, int($mid * $se))"}
            - ghost: {out: $out, act: identity}
layers:
  - conv2d: {out_channels: 16, kernel_size: 3, padding: 1, bias: false}
  - batchnorm
  - relu
  - bottleneck: {mid: 16, out: 16}
  - bottleneck_down: {mid: 48, out: 24}
  - bottleneck: {mid: 72, out: 24}
  - bottleneck_down_se: {mid: 72, out: 40, se: 0.25}
  - bottleneck_se: {mid: 120, out: 40, se: 0.25}
  - bottleneck_down: {mid: 240, out: 80}
  - bottleneck_se: {mid: 184, out: 80, se: 0.25}
  - conv2d: {out_channels: 320, kernel_size: 1, bias: false}
  - batchnorm
  - relu
  - adaptive_avgpool2d
  - flatten
  - linear: {out_features: 10}
"""


def test_ghostnet_example_with_one_conditional_block_is_the_network_of_four_copies():
    one = netspec.build(ROOT / "examples" / "ghostnet_small.yaml").eval()
    copies = netspec.build(GHOST_COPIES).eval()
    assert one.net_shape.total_params == copies.net_shape.total_params == 111_784
    assert one.net_shape.macs == copies.net_shape.macs
    assert [t.shape for t in one.state_dict().values()] == [t.shape for t in copies.state_dict().values()]
    transfer_state_dict(copies.state_dict(), one)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(one(x), copies(x), rtol=0, atol=0)


def test_a_block_exposes_named_outputs_that_a_caller_reads_as_name_dot_output():
    net = netspec.infer_shapes(ROOT / "examples" / "unet_outputs.yaml")
    concats = [info for info in net.layers if info.layer.kind == "concat"]
    assert [c.reads for c in concats] == [("u2", "d2.skip"), ("u1", "d1.skip")]
    assert [c.output_shape for c in concats] == [(32, 8, 8), (16, 16, 16)]
    # The skip is the encoder's output before pooling: the model computes exactly that.
    model = netspec.build(ROOT / "examples" / "unet_outputs.yaml").eval()
    x = torch.randn(2, 1, 16, 16)
    skip = model.d1_skip(model.conv1(x))
    assert skip.shape == (2, 8, 16, 16)
    u1 = model.u1(
        model.conv4(
            torch.cat(
                [
                    model.u2(model.conv3(model.d2(model.d2_skip(model.conv2(model.d1(skip)))))),
                    model.d2_skip(model.conv2(model.d1(skip))),
                ],
                dim=1,
            )
        )
    )
    torch.testing.assert_close(model(x), model.conv5(torch.cat([u1, skip], dim=1)), rtol=0, atol=0)


def test_named_outputs_inside_a_block_used_with_several_widths():
    text = """
blocks:
  two:
    outputs: [first]
    params: {ch: null}
    layers:
      - conv2d: {out_channels: $ch, kernel_size: 3, padding: 1}
        as: first
      - relu
      - conv2d: {out_channels: $ch, kernel_size: 3, padding: 1}
  tree:                     # DLA's tree: its root joins the last stage's output and an inner one
    params: {ch: null}
    layers:
      - two: {ch: $ch}
        as: a
      - concat: [identity, identity]
        from: [a, a.first]
      - conv2d: {out_channels: $ch, kernel_size: 1}
name: t
input: [4, 8, 8]
layers:
  - tree: {ch: 8}
  - tree: {ch: 16}
"""
    net = netspec.infer_shapes(text)
    assert [info.output_shape for info in net.layers if info.layer.kind == "concat"] == [(16, 8, 8), (32, 8, 8)]
    assert netspec.build(text)(torch.randn(1, 4, 8, 8)).shape == (1, 16, 8, 8)


def test_a_spec_with_conditions_and_outputs_round_trips_through_its_data():
    for example in ("ghostnet_small", "unet_outputs"):
        spec = netspec.load_spec(ROOT / "examples" / f"{example}.yaml")
        again = netspec.as_spec(spec.to_data())
        assert [t.shape for t in netspec.build(again).state_dict().values()] == [
            t.shape for t in netspec.build(spec).state_dict().values()
        ]
    # A block without outputs is written as before they existed.
    assert "outputs" not in netspec.load_spec(ROOT / "examples" / "ghostnet_small.yaml").to_data()["blocks"]["ghost"]


def test_the_json_schema_accepts_conditions_layer_parameters_and_outputs():
    import jsonschema
    import yaml

    from netspec.spec import Spec

    schema = Spec.model_json_schema()
    for example in ("ghostnet_small", "unet_outputs"):  # `if:`, `- $act`, `outputs:` and `from: d2.skip`
        jsonschema.validate(yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text()), schema)


# --- the messages that misled (issue 29); the spec errors themselves are cases of tests/test_spec_errors.py ---


def test_attention_on_grouped_tokens_is_valid_and_on_a_convolution_s_image_warns(tmp_path: Path, capsys):
    # 4×64×64 from the spec's input: 4 groups of 64 tokens (MobileViT), no flattening advice.
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text("name: t\ninput: [4, 64, 64]\nlayers:\n  - multihead_attention: {num_heads: 4}\n")
    assert main(["build", str(grouped)]) == 0
    assert capsys.readouterr().err == ""
    # Straight after a convolution, 64×8×8 is an image: the warning says how it is read and how to make tokens.
    image = tmp_path / "image.yaml"
    image.write_text(
        "name: t\ninput: [3, 32, 32]\nlayers:\n  - conv2d: {out_channels: 64, kernel_size: 4, stride: 4}\n"
        "  - multihead_attention: {num_heads: 4}\n"
    )
    assert main(["build", str(image)]) == 0
    assert capsys.readouterr().err == (
        f"warning: multihead_attention at layers[1] ({image}:5) follows conv2d at layers[0]: it reads 64×8×8 as 64 "
        "groups of 8 tokens of 8 features (G×L×D); if the 8×8 positions are the tokens, make them first (flatten: "
        "{start_dim: 2} and transpose: {dim0: 1, dim1: 2})\n"
    )


def test_a_transfer_between_different_networks_names_the_tensors_without_a_counterpart(tmp_path: Path):
    lenet = netspec.build(ROOT / "specs" / "lenet.yaml")
    text = (ROOT / "specs" / "lenet.yaml").read_text()
    # The same network with a batchnorm after its first convolution: 5 tensors more, all of them named.
    first_conv = re.search(r"  - conv2d: .*\n", text)
    assert first_conv is not None
    wider = netspec.build(text[: first_conv.end()] + "  - batchnorm\n" + text[first_conv.end() :])
    with pytest.raises(CheckpointError) as caught:
        transfer_state_dict(wider.state_dict(), lenet)
    assert str(caught.value) == (
        "the source has 15 tensors but the model has 10: 5 of the source's tensors have no counterpart in the model: "
        "bn.weight (6), bn.bias (6), bn.running_mean (6), bn.running_var (6), ... (1 more)"
    )
    # --init-from a state_dict file of that network says the same before refusing it.
    path = tmp_path / "wider.pt"
    torch.save(wider.state_dict(), path)
    with pytest.raises(UsageError) as refused:
        start_from(lenet, TrainConfig(init_from=str(path)))
    assert (
        "it holds 15 tensors but the network has 10, so it is another architecture (5 of the file's tensors have no "
        "counterpart in the network: bn.weight (6), bn.bias (6), bn.running_mean (6), bn.running_var (6), ... (1 more)"
        "); pass --skip-mismatched"
    ) in str(refused.value)
