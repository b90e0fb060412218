"""The Python API takes a spec as a path, YAML text, a dict or a Spec, with the command line's located errors."""

from __future__ import annotations

import pytest
import yaml

import netspec
from tests.conftest import SPECS


def test_build_takes_a_path_yaml_text_a_dict_or_a_spec():
    text = (SPECS / "lenet.yaml").read_text()
    built = [
        netspec.build(SPECS / "lenet.yaml"),
        netspec.build(str(SPECS / "lenet.yaml")),
        netspec.build(text),
        netspec.build(yaml.safe_load(text)),
        netspec.build(netspec.parse_spec(text)),
    ]
    keys = [list(m.state_dict()) for m in built]
    assert all(k == keys[0] for k in keys)
    assert {m.net_shape.total_params for m in built} == {61_706}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"name": "x", "input": [4], "layers": [{"linear": {"out_feature": 2}}]},
            "<dict>: layers[0] linear: unknown argument 'out_feature' (did you mean 'out_features'?)",
        ),
        ("name: x\ninput: [4]\nlayers: [relux]\n", "<string>:3:10: layers[0]: unknown layer kind 'relux'"),
        ("no_such_spec.yaml", "no_such_spec.yaml: no such file"),
        (5, "a spec is a path, YAML text, a dict or a netspec.Spec, not int"),
    ],
)
def test_invalid_specs_raise_a_located_spec_error(spec, message):
    with pytest.raises(netspec.SpecError) as info:
        netspec.build(spec)
    assert str(info.value).startswith(message)


def test_pytorch_spellings_of_kinds_are_accepted():
    spec = "name: x\ninput: [3, 8, 8]\nlayers:\n  - nn.Conv2d: {out_channels: 4, kernel_size: 3}\n  - ReLU\n  - Relu\n"
    assert [row.kind for row in netspec.infer_shapes(spec).layers] == ["conv2d", "relu", "relu"]
