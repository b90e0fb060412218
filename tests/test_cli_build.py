"""`netspec build` and `netspec schema` as a user runs them (in a subprocess)."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from netspec.spec import Spec
from tests.conftest import SPECS, ZOO, run_cli


def test_build_json_for_lenet():
    result = run_cli("build", "specs/lenet.yaml", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"name", "input_shape", "output_shape", "total_params", "trainable_params", "macs", "layers"}
    assert data["total_params"] == data["trainable_params"] == 61_706
    assert data["output_shape"] == [10]
    assert data["input_shape"] == [1, 28, 28]
    assert data["layers"][0] == {
        "index": 0,
        "path": "layers[0]",
        "kind": "conv2d",
        "depth": 0,
        "output_shape": [6, 28, 28],
        "params": 156,
        "macs": 117_600,
    }
    assert sum(layer["macs"] for layer in data["layers"]) == data["macs"]


def test_build_table_shows_layers_and_totals():
    result = run_cli("build", "specs/lenet.yaml", env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    assert "61,706" in result.stdout
    assert "16×5×5" in result.stdout
    assert "avgpool2d" in result.stdout


def test_build_json_paths_into_blocks():
    data = json.loads(run_cli("build", "specs/resnet_small.yaml", "--json").stdout)
    paths = [layer["path"] for layer in data["layers"]]
    assert "layers[1].repeat#1[0].basic_block[0].residual[0].conv_bn_relu[0]" in paths
    assert "layers[2].basic_block[0].shortcut[0]" in paths
    # A residual is a merge: its row (kind residual, depth 0) comes before its branches' rows (depth 1).
    rows = {layer["path"]: layer for layer in data["layers"]}
    assert rows["layers[2].basic_block[0]"]["kind"] == "residual"
    assert rows["layers[2].basic_block[0]"]["depth"] == 0
    assert rows["layers[2].basic_block[0].shortcut[0]"]["depth"] == 1


def test_build_table_indents_branches_under_their_merge():
    result = run_cli("build", "specs/googlenet.yaml", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    merge = next(i for i, line in enumerate(lines) if "layers[8].inception[0] " in line)
    assert "concat" in lines[merge] and "256×12×12" in lines[merge]
    assert "│ layers[8].inception[0].branch[0][0]" in lines[merge + 1]
    assert "│ conv2d" in lines[merge + 1]


def test_invalid_spec_exits_2_without_traceback(write_spec):
    path = write_spec("name: t\ninput: [1, 28, 28]\nlayers:\n  - linear: {out_features: 10}\n")
    result = run_cli("build", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}:4:5: layers[0] linear:")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_unknown_option_exits_2():
    result = run_cli("build", "specs/lenet.yaml", "--jsn")
    assert result.returncode == 2
    assert "unrecognized arguments: --jsn" in result.stderr


def test_schema_is_json_schema_that_accepts_every_zoo_spec():
    result = run_cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    layer_item = schema["properties"]["layers"]["items"]
    bare = next(option["enum"] for option in layer_item["anyOf"] if "enum" in option)
    assert "relu" in bare and "conv2d" not in bare  # conv2d needs arguments
    assert "Conv2dEntry" in schema["$defs"]
    assert set(schema["$defs"]["Conv2dArgs"]["required"]) == {"out_channels", "kernel_size"}
    # Validate every zoo spec against the exported schema with a real validator.

    for name in ZOO:
        jsonschema.validate(yaml.safe_load((SPECS / f"{name}.yaml").read_text()), schema)
    assert schema["properties"].keys() == Spec.model_fields.keys()


@pytest.mark.slow
def test_build_compile_really_compiles():
    result = run_cli("build", "specs/mlp.yaml", "--compile", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_params"] == 669_706
    assert "torch.compile: compiled and ran a forward pass in" in result.stderr


def test_every_option_of_every_command_has_help_and_each_command_has_examples():
    import argparse

    from netspec.cli import make_parser

    parser = make_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) >= {"build", "schema", "train", "eval", "bench", "sweep", "export", "draw"}
    for name, command in commands.items():
        assert command.epilog and command.epilog.startswith("examples:"), name
        assert f"netspec {name}" in command.epilog, name
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"netspec {name} {action.option_strings or action.dest} has no help text"
    text = commands["train"].format_help()
    assert "the recipe (overrides of the spec's train section):" in text and "--lr LR" in text
