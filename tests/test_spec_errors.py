"""Every invalid spec ends in one clear message with file:line:col, layer and numbers, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from netspec.cli import main

HEADER = "name: t\ninput: [1, 28, 28]\nlayers:\n"

# (spec text, the exact message after "error: ")
CASES = [
    pytest.param(
        "name: t\ninput: [1, 12, 12]\nlayers:\n  - conv2d: {out_channels: 16, kernel_size: 5}\n"
        "  - relu\n  - maxpool2d: {kernel_size: 2}\n  - maxpool2d: {kernel_size: 5}\n",
        "{f}:7:5: layers[3] maxpool2d: kernel_size 5 is larger than its padded input 4×4 "
        "(input 16×4×4 after layers[2])",
        id="kernel-larger-than-input",
    ),
    pytest.param(
        HEADER + "  - conv2:  {out_channels: 6, kernel_size: 5}\n",
        "{f}:4:5: layers[0]: unknown layer kind 'conv2' (did you mean 'conv2d'?)",
        id="unknown-kind",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 6, kernel_sise: 5}\n",
        "{f}:4:31: layers[0] conv2d: unknown argument 'kernel_sise' (did you mean 'kernel_size'?); "
        "conv2d takes: out_channels, kernel_size, in_channels, stride, padding, dilation, groups, bias",
        id="unknown-argument",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 6}\n",
        "{f}:4:13: layers[0] conv2d: missing required argument 'kernel_size'",
        id="missing-argument",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 0, kernel_size: 0, stride: 0, dilation: 0, groups: 0, padding: -1}\n",
        "{f}:4:28: layers[0] conv2d: out_channels: input should be greater than 0, got 0\n"
        "{f}:4:44: layers[0] conv2d: kernel_size: input should be greater than 0, got 0\n"
        "{f}:4:55: layers[0] conv2d: stride: input should be greater than 0, got 0\n"
        "{f}:4:91: layers[0] conv2d: padding: input should be greater than or equal to 0, got -1\n"
        "{f}:4:68: layers[0] conv2d: dilation: input should be greater than 0, got 0\n"
        "... and 1 more problem",
        id="many-problems",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 6, kernel_size: 0}\n",
        "{f}:4:44: layers[0] conv2d: kernel_size: input should be greater than 0, got 0",
        id="zero-size",
    ),
    pytest.param(
        HEADER + "  - maxpool2d: {kernel_size: [0, 3]}\n",
        "{f}:4:31: layers[0] maxpool2d: kernel_size.0: input should be greater than 0, got 0",
        id="zero-in-a-pair",
    ),
    pytest.param(
        HEADER + "  - residual:\n      layers: [relu]\n      shortcut:\n        - linear: {out_features: 0}\n",
        "{f}:7:34: layers[0].shortcut[0] linear: out_features: input should be greater than 0, got 0",
        id="bad-layer-in-shortcut-list",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: -6, kernel_size: 3}\n",
        "{f}:4:28: layers[0] conv2d: out_channels: input should be greater than 0, got -6",
        id="negative-size",
    ),
    pytest.param(
        HEADER + "  - linear: {out_features: 10}\n",
        "{f}:4:5: layers[0] linear: expects a flat (features) input, got 1×28×28; add a flatten layer before it "
        "(input 1×28×28 from the spec's input)",
        id="linear-on-image",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 8, kernel_size: 3, stride: 2}\n" * 5,
        "{f}:7:5: layers[3] conv2d: kernel_size 3 is larger than its padded input 2×2 (input 8×2×2 after layers[2])",
        id="shrinks-to-nothing",
    ),
    pytest.param(
        HEADER + "  - conv2d: {in_channels: 3, out_channels: 6, kernel_size: 5}\n",
        "{f}:4:5: layers[0] conv2d: in_channels is 3 but the input has 1 (input 1×28×28 from the spec's input)",
        id="declared-in-channels-wrong",
    ),
    pytest.param("", "{f}: the spec is empty; it needs at least name, input and layers", id="empty-file"),
    pytest.param(
        "- relu\n- flatten\n",
        "{f}:1:1: a spec must be a mapping with name, input and layers, not a list",
        id="list-instead-of-mapping",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28\nlayers: []\n",
        "{f}:3:7: invalid YAML: while parsing a flow sequence: expected ',' or ']', but got ':'",
        id="malformed-yaml",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nlayers: [relu]\nlayers: [tanh]\n",
        "{f}:4:1: duplicate key 'layers' (first given on line 3)",
        id="duplicate-key",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nlayrs: [relu]\n",
        "{f}:3:1: unknown top-level key 'layrs' (did you mean 'layers'?)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        HEADER + "  - !!python/object/apply:os.system 'echo pwned'\n",
        "{f}:4:5: invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
        id="python-object-tag-scalar",
    ),
    pytest.param("name: t\nlayers: [relu]\n", "{f}:1:1: missing required key 'input'", id="missing-input"),
    pytest.param(
        HEADER + "  - !!python/object/apply:os.system ['echo pwned']\n",
        "{f}:4:5: invalid YAML: unsupported tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        id="python-object-tag",
    ),
    pytest.param(
        HEADER + "  - {conv2d: {out_channels: 6, kernel_size: 3}, relu: null}\n",
        "{f}:4:5: layers[0]: a layer is one name or a one-key mapping (conv2d: ...); this mapping has 2 keys "
        "(conv2d, relu): put each layer in its own list item",
        id="two-layers-in-one-item",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 6, kernel_size: 3, stride: 2, padding: same}\n",
        "{f}:4:5: layers[0] conv2d: padding 'same' needs stride 1 (torch does not support strided 'same') "
        "(input 1×28×28 from the spec's input)",
        id="strided-same",
    ),
    pytest.param(
        HEADER + "  - maxpool2d: {kernel_size: 2, padding: 2}\n",
        "{f}:4:5: layers[0] maxpool2d: padding 2 is more than half of kernel_size 2 (input 1×28×28 from the spec's input)",
        id="pool-padding",
    ),
    pytest.param(
        HEADER + "  - residual:\n      layers:\n        - conv2d: {out_channels: 4, kernel_size: 3}\n"
        "      shortcut: identity\n",
        "{f}:5:7: layers[0] residual: the body gives 4×26×26 but the shortcut gives 1×28×28; "
        "they must match to be added",
        id="residual-mismatch",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  cbr:\n    params: {out: null}\n    layers:\n"
        "      - conv2d: {out_channels: $out, kernel_size: 3}\nlayers:\n  - cbr: {outt: 4}\n",
        "{f}:9:11: layers[0] cbr: unknown parameter 'outt' (did you mean 'out'?); block cbr takes: out",
        id="block-unknown-parameter",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  cbr:\n    params: {out: null}\n    layers:\n"
        "      - conv2d: {out_channels: $out, kernel_size: 3}\nlayers:\n  - cbr\n",
        "{f}:9:5: layers[0] cbr: block cbr needs parameter out",
        id="block-missing-parameter",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  cbr:\n    params: {out: 4}\n    layers:\n"
        "      - conv2d: {out_channels: $out, kernel_size: 3}\nlayers:\n  - cbr: {out: 0}\n",
        "{f}:7:32: layers[0].cbr[0] conv2d: out_channels: input should be greater than 0, got 0",
        id="bad-block-argument",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  cbr:\n    params: {out: 4}\n    layers:\n"
        "      - conv2d: {out_channels: $out, kernel_size: 99}\nlayers:\n  - cbr\n",
        "{f}:7:9: layers[0].cbr[0] conv2d: kernel_size 99 is larger than its padded input 28×28 "
        "(input 1×28×28 from the spec's input)",
        id="error-inside-block",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  a:\n    layers: [b]\n  b:\n    layers: [a]\nlayers:\n  - a\n",
        "{f}:7:14: layers[0].a[0].b[0] a: block a uses itself (a → b → a)",
        id="recursive-block",
    ),
    pytest.param(
        HEADER + "  - flatten\n  - batchnorm2d\n",
        "{f}:5:5: layers[1] batchnorm2d: expects an image (channels×height×width) input, got 784 "
        "(input 784 after layers[0])",
        id="batchnorm2d-on-vector",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nlayers: [relu]\ntrain: {optimizer: rmsprop}\n",
        "{f}:4:20: train.optimizer: input should be 'sgd', 'adam' or 'adamw', got 'rmsprop'",
        id="bad-train-section",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_invalid_spec_message_and_exit_code(text: str, expected: str, tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main(["build", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {expected.format(f=path)}\n"
    assert "Traceback" not in err


def test_missing_file(tmp_path: Path, capsys):
    assert main(["build", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.yaml'}: no such file\n"


def test_directory(tmp_path: Path, capsys):
    assert main(["build", str(tmp_path)]) == 2
    assert "is a directory, not a spec file" in capsys.readouterr().err
