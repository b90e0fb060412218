"""`netspec build` and `netspec schema` as a user runs them (in a subprocess)."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from rich.console import Console

import netspec
from netspec.memory import estimate
from netspec.spec import Spec
from netspec.summary import memory_table, summary_table
from tests.conftest import SPECS, ZOO, run_cli


def test_build_json_for_lenet():
    result = run_cli("build", "specs/lenet.yaml", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {
        "name", "input_shape", "output_shape", "total_params", "trainable_params", "macs", "elementwise", "layers",
    }  # fmt: skip
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
        "elementwise": 0,
    }
    assert sum(layer["macs"] for layer in data["layers"]) == data["macs"]
    assert data["elementwise"] == 0 and "memory" not in data  # memory only with --batch-size


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
    result = run_cli("build", "specs/d2l_googlenet.yaml", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    merge = next(i for i, line in enumerate(lines) if "layers[8].inception[0] " in line)
    assert "concat" in lines[merge] and "256×12×12" in lines[merge]
    assert "│ layers[8].inception[0].branch[0][0]" in lines[merge + 1]
    assert "│ conv2d" in lines[merge + 1]


def test_invalid_spec_exits_2_without_traceback(write_spec):
    # (linear now takes the last dimension of any rank: a written in_features is what it cannot take)
    path = write_spec("name: t\ninput: [1, 28, 28]\nlayers:\n  - linear: {in_features: 784, out_features: 10}\n")
    result = run_cli("build", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}:4:5: layers[0] linear:")
    assert "add a flatten layer before it" in result.stderr
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
    # Validate every zoo spec against the exported schema with a real validator (one validator: the schema is
    # checked once, not once per spec as jsonschema.validate does).
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    for name in ZOO:
        validator.validate(yaml.safe_load((SPECS / f"{name}.yaml").read_text()))
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


def test_build_json_carries_elementwise_ops_of_merges_apart_from_macs():
    data = json.loads(run_cli("build", "specs/resnet_small.yaml", "--json").stdout)
    rows = {layer["path"]: layer for layer in data["layers"]}
    residual = rows["layers[2].basic_block[0]"]
    assert (residual["macs"], residual["elementwise"]) == (0, 32 * 16 * 16)  # one add per output element
    assert data["elementwise"] == sum(layer["elementwise"] for layer in data["layers"]) > 0
    assert data["macs"] == sum(layer["macs"] for layer in data["layers"])


def test_build_with_a_batch_size_predicts_memory():
    result = run_cli(
        "build", "specs/d2l_resnet18.yaml", "--batch-size", "128", "--amp", "bf16", "--optimizer", "adam",
        "--device", "cuda", "--nproc-per-node", "2", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    memory = data["memory"]
    assert {"params", "grads", "optimizer", "activations", "peak_train", "peak_infer"} <= set(memory)
    assert memory["settings"] == {
        "batch_size": 64, "processes": 2, "global_batch_size": 128, "amp": "bf16", "optimizer": "adam",
        "momentum": 0.0, "device": "cuda",
    }  # fmt: skip
    expected = estimate(netspec.infer_shapes(SPECS / "d2l_resnet18.yaml"), 64, amp="bf16", optimizer="adam")
    assert memory["activations"] == expected.activations == sum(layer["saved_bytes"] for layer in data["layers"])
    assert memory["params"] == memory["grads"] == 4 * 11_178_378
    assert memory["optimizer"] == 2 * memory["params"]
    assert memory["peak_train"] == expected.peak_train > memory["peak_infer"] == expected.peak_infer


def test_build_table_shows_the_saved_column_and_the_memory_summary():
    result = run_cli("build", "specs/lenet.yaml", "--batch-size", "256", env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "saved" in next(line for line in lines if " layer " in line)
    assert "memory at batch 256: float32, sgd" in result.stdout  # lenet's recipe: SGD without momentum
    for what in ("parameters", "gradients", "optimizer state", "saved activations", "peak, training step"):
        assert any(line.startswith(what) for line in lines), what
    assert "none for plain SGD" in result.stdout


def test_build_memory_options_need_a_batch_size():
    result = run_cli("build", "specs/lenet.yaml", "--optimizer", "adam")
    assert result.returncode == 2 and "give --batch-size" in result.stderr
    result = run_cli("build", "specs/lenet.yaml", "--batch-size", "10", "--nproc-per-node", "4")
    assert result.returncode == 2 and "does not divide among 4 processes" in result.stderr


KIND_SPECS = sorted((SPECS.parent / "tests" / "fixtures" / "memory").glob("*.yaml"))


def _render(net, memory, width: int) -> str:
    console = Console(width=width, record=True)
    console.print(summary_table(net, memory, width=width))
    if memory is not None:
        console.print(memory_table(memory, 2))
    return console.export_text()


@pytest.mark.parametrize("path", [SPECS / f"{name}.yaml" for name in ZOO] + KIND_SPECS, ids=lambda p: p.stem)
def test_build_tables_fit_80_columns_without_cutting_names_or_numbers(path):
    net = netspec.infer_shapes(path)
    for memory in (None, estimate(net, 128)):
        text = _render(net, memory, 80)
        lines = text.splitlines()
        assert max(len(line.rstrip()) for line in lines) <= 80
        header = next(line for line in lines if " layer " in line)
        start, end = header.index("layer"), header.index("kind")
        previous = ""
        for line in lines[lines.index(header) + 2 :]:
            if not line.strip():
                break
            piece = line[start:end].strip(" │")
            # A path folds after a dot (or inside a too-long name, after an underscore); a row's tap name after →
            # (the name itself may stand on the next line, whole).
            after_arrow = previous.endswith("→") and piece.isidentifier()
            assert not piece or piece.endswith((".", "]", "_")) or "→" in piece or after_arrow, (path.stem, line)
            previous = piece
        for info in net.layers:  # every number whole
            for number in (info.params, info.macs, info.elementwise):
                assert not number or f"{number:,}" in text
        assert f"{net.total_params:,}" in text and f"{net.macs:,}" in text
        assert "…" not in text.replace("….", "")  # nothing truncated (rows in merges start with "….")


def test_build_table_at_a_wide_width_shows_whole_paths_one_row_a_line():
    net = netspec.infer_shapes(SPECS / "se_resnet_small.yaml")
    memory = estimate(net, 32)
    text = _render(net, memory, 220)
    lines = text.splitlines()
    for info in net.layers:
        assert sum(info.path + " " in line or line.rstrip().endswith(info.path) for line in lines) >= 1, info.path
    header = next(i for i, line in enumerate(lines) if " layer " in line)
    assert all(line.split()[0].isdigit() for line in lines[header + 2 : header + 2 + len(net.layers)])
    assert "element-" in lines[header - 1] and "saved" in lines[header]
