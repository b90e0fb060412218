"""The kinds of issue 29 one by one: shape rule, parameters, MACs, the values they compute, and their errors
(one located message, exit 2). Memory (tests/fixtures/memory/attention_parts.yaml) and export
(test_export.py::test_attention_parts_export_in_every_format) are checked beside their families' tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import netspec
from netspec.cli import main


def _net(write_spec, text: str) -> netspec.SpecNet:
    torch.manual_seed(0)
    return netspec.build(write_spec(text))


def test_matmul_multiplies_two_computed_tensors_and_counts_its_macs(write_spec):
    model = _net(
        write_spec,
        "name: t\ninput: [3, 5, 8]\nlayers:\n"
        "  - matmul: {branches: [identity, [linear: {out_features: 8}]], transpose_b: true}\n",
    ).eval()
    row = model.net_shape.layers[0]
    assert (row.output_shape, row.macs, row.elementwise) == ((3, 5, 5), 3 * 5 * 5 * 8, 0)
    x = torch.randn(2, 3, 5, 8)
    fc = model.get_submodule(model.net_shape.layers[1].attr)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x @ fc(x).transpose(-2, -1))


def test_subtract_and_broadcasting_add_follow_torch(write_spec):
    model = _net(
        write_spec,
        "name: t\ninput: [4, 6]\nlayers:\n"
        "  - subtract: [identity, [mean: {dims: [1], keepdim: true}]]\n"
        "  - add: [identity, [parameter: {shape: [1, 6], init: normal}]]\n"
        "  - neg\n  - scale: {factor: '2 ** -1'}\n  - sum: {dims: [-1]}\n",
    )
    net = model.net_shape
    assert [row.output_shape for row in net.layers] == [(4, 6), (1, 6), (4, 6), (1, 6), (4, 6), (4, 6), (4,)]
    assert net.total_params == 6 and net.macs == 0
    x = torch.randn(3, 4, 6)
    bias = next(model.parameters())
    with torch.no_grad():
        expected = (-((x - x.mean(1, keepdim=True)) + bias) * 0.5).sum(-1)
        torch.testing.assert_close(model(x), expected)


def test_parameter_with_a_view_is_stored_as_its_shape(write_spec):
    model = _net(
        write_spec,
        "name: t\ninput: [4, 3, 3]\nlayers:\n"
        "  - multiply: [identity, [parameter: {shape: [4], view: [4, 1, 1], init: uniform}]]\n",
    )
    (gamma,) = model.parameters()
    assert tuple(gamma.shape) == (4,)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x * gamma.view(1, 4, 1, 1))


def test_relative_bias_reads_its_table_at_levit_and_swin_indices(write_spec):
    model = _net(
        write_spec,
        "name: t\ninput: [2, 4, 16]\nlayers:\n  - relative_bias: {resolution: 4, rule: levit, stride: 2}\n",
    )
    assert model.net_shape.total_params == 2 * 16
    table = next(model.parameters())
    with torch.no_grad():
        table.copy_(torch.randn_like(table))
        out = model(torch.zeros(1, 2, 4, 16))[0]
    # query (0, 1) on the stride-2 grid is point (0, 2); key (3, 0): offsets |0-3|, |2-0| -> index 3·4 + 2
    torch.testing.assert_close(out[:, 1, 3 * 4 + 0], table[:, 3 * 4 + 2])
    swin = _net(write_spec, "name: t\ninput: [3, 9, 9]\nlayers:\n  - relative_bias: {resolution: 3, rule: swin}\n")
    (table,) = swin.parameters()
    assert tuple(table.shape) == (25, 3)  # (2·3 − 1)² offsets × heads, as Swin stores it
    with torch.no_grad():
        table.copy_(torch.randn_like(table))
        out = swin(torch.zeros(1, 3, 9, 9))[0]
    # token (0, 0) to token (2, 1): offsets (-2, -1) shifted by 2 -> (0, 1) -> index 0·5 + 1
    torch.testing.assert_close(out[:, 0, 2 * 3 + 1], table[1])


def test_multihead_attention_over_groups_shares_its_weights(write_spec):
    model = _net(write_spec, "name: t\ninput: [3, 5, 8]\nlayers:\n  - multihead_attention: {num_heads: 2}\n").eval()
    row = model.net_shape.layers[0]
    assert row.params == 4 * 8 * 8 + 4 * 8
    assert row.macs == 3 * (4 * 5 * 8 * 8 + 2 * 5 * 5 * 8)
    x = torch.randn(2, 3, 5, 8)
    with torch.no_grad():
        grouped = model(x)
        one_by_one = torch.stack([model.get_submodule(row.attr)(x[:, g]) for g in range(3)], dim=1)
    torch.testing.assert_close(grouped, one_by_one)


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        pytest.param(
            "  - matmul: [identity, identity]\n",
            "layers[0] matmul: branch 0 gives 5×8 but branch 1 gives 5×8 (5×8 @ 5×8: inner sizes 8 and 5 differ; "
            "transpose_b: true multiplies by the transpose)",
            id="matmul-inner",
        ),
        pytest.param(
            "  - relative_bias: {resolution: 3}\n",
            "layers[0] relative_bias: expects an image (channels×height×width) input, got 5×8; it adds to attention "
            "logits heads×queries×keys (matmul of q and k)",
            id="relative-bias-rank",
        ),
        pytest.param(
            "  - reshape: {shape: [1, 5, 8]}\n  - relative_bias: {resolution: 3}\n",
            "layers[1] relative_bias: resolution 3 gives 9 queries × 9 keys, but the logits are 1×5×8 "
            "(heads×queries×keys)",
            id="relative-bias-tokens",
        ),
        pytest.param(
            "  - multiply: [identity, [parameter: {shape: [8], view: [4, 1]}]]\n",
            "view 4×1 (4 values) does not hold the 8 values of shape 8",
            id="parameter-view-count",
        ),
        pytest.param(
            "  - mean: {dims: [1, -2]}\n",
            "layers[0] mean: dims [1, -2] name a dimension twice",
            id="mean-dims-twice",
        ),
        pytest.param(
            "  - sum: {dims: [0]}\n",
            "layers[0] sum: dims 0 is the batch dimension; count dims as torch does, the batch is 0",
            id="sum-over-the-batch",
        ),
        pytest.param(
            "  - subtract: [identity, [linear: {out_features: 3}]]\n",
            "layers[0] subtract: branch 0 gives 5×8 but branch 1 gives 5×3 (dimension 2 differs (8 vs 3) and "
            "neither is 1 to broadcast)",
            id="subtract-broadcast",
        ),
        pytest.param(
            "  - multihead_attention: {num_heads: 3}\n",
            "layers[0] multihead_attention: 8 features are not divisible by num_heads 3",
            id="attention-heads",
        ),
    ],
)
def test_errors_of_the_new_kinds_name_the_layer_and_the_numbers(
    layers: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\ninput: [5, 8]\nlayers:\n" + layers)
    assert main(["build", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:") and expected in err, err
    assert "Traceback" not in err


def test_a_block_parameter_view_exports_with_the_sizes_of_each_use(write_spec, tmp_path: Path):
    # One class for three uses: its forward cannot read __init__'s sizes, so a view with one of them writes -1
    # there, and a view with several reads the tuple __init__ keeps.
    path = write_spec(
        "name: t\ninput: [4, 6]\nblocks:\n  ls:\n    params: {a: null, b: null}\n    layers:\n"
        "      - multiply: [identity, [parameter: {shape: ['$a * $b'], view: [$a, $b], init: normal}]]\n"
        "  ls1:\n    params: {b: null}\n    layers:\n"
        "      - multiply: [identity, [parameter: {shape: [$b], view: [1, $b], init: normal}]]\n"
        "layers:\n  - ls: {a: 4, b: 6}\n  - ls: {a: 1, b: 6}\n  - ls: {a: 4, b: 1}\n  - ls1: {b: 6}\n  - ls1: {b: 1}\n"
    )
    result = netspec.export(path, format="python", out=tmp_path)  # checked against the model, or it raises
    source = result.path.read_text()
    assert "self.branch2.view(self.branch2_view)" in source and ".view(1, 1, -1)" in source
