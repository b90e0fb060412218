"""Limits of the spec language: bombs refused before any tensor, expression errors located, the forgotten
flatten warned about, numeric options checked. Every refusal is one located message with exit code 2."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from netspec.cli import main


def _build(path: Path, capsys, *extra: str) -> tuple[int, str, float]:
    """`netspec build PATH` in this process: exit code, stderr and seconds taken."""
    start = time.perf_counter()
    code = main(["build", str(path), *extra])
    seconds = time.perf_counter() - start
    return code, capsys.readouterr().err, seconds


# --- bombs: refused fast, before anything is expanded -----------------------------------------------

REPEAT_BOMB = """name: bomb
input: [10]
layers:
  - repeat:
      times: 1000000000
      layers:
        - linear: {out_features: 10}
"""

NESTED_REPEATS = """name: nested
input: [10]
layers:
  - repeat:
      times: 1000
      layers:
        - relu
        - repeat:
            times: 1000
            layers:
              - relu
"""


HIDDEN_IN_A_BLOCK = """name: hidden
input: [10]
blocks:
  stack:
    params: {n: null}
    layers:
      - repeat:
          times: $n
          layers:
            - relu
layers:
  - repeat:
      times: 1000
      layers:
        - stack: {n: 1000}
"""


def _squares(n: int) -> str:
    """n variables, each the square of the one before it: 3, 9, 81, ... (the 7th has 31 digits)."""
    lines = ["name: squares", "input: [10]", "vars:", "  v0: 3"]
    lines += [f"  v{i}: $v{i - 1} * $v{i - 1}" for i in range(1, n)]
    lines += ["layers:", f"  - linear: {{out_features: $v{n - 1}}}"]
    return "\n".join(lines) + "\n"


def _doubling_blocks(levels: int) -> str:
    """Blocks that each use the one before twice: 2**levels layers without a single repeat."""
    lines = ["name: doubling", "input: [10]", "blocks:", "  b0:", "    layers:", "      - relu"]
    for i in range(1, levels):
        lines += [f"  b{i}:", "    layers:", f"      - b{i - 1}", f"      - b{i - 1}"]
    lines += ["layers:", f"  - b{levels - 1}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            REPEAT_BOMB,
            "{f}:5:14: layers[0] repeat: repeat ×1,000,000,000 expands the spec to more than 100,000 layers "
            "(at least 1,000,000,000); no network needs that many: check the repeat counts",
            id="repeat-a-billion-times",
        ),
        pytest.param(
            NESTED_REPEATS,
            "{f}:5:14: layers[0] repeat: repeat ×1,000 expands the spec to more than 100,000 layers "
            "(at least 1,001,000); no network needs that many: check the repeat counts",
            id="nested-repeats",
        ),
        pytest.param(
            HIDDEN_IN_A_BLOCK,
            "{f}:8:18: layers[0].repeat#0[0].stack[0] repeat: repeat ×1,000 inside repeats ×1,000 expands the spec "
            "to more than 100,000 layers (at least 1,000,000); no network needs that many: check the repeat counts",
            id="count-from-a-block-parameter",
        ),
        pytest.param(
            _doubling_blocks(30),
            "{f}:124:5: layers[0] b29: block b29 expands the spec to more than 100,000 layers (at least 100,001); "
            "no network needs that many: check the repeat counts",
            id="blocks-doubling",
        ),
        pytest.param(
            _squares(40),
            "{f}:10:7: vars: $v6: '$v5 * $v5' gives a number too large (31 digits; the limit is 2**62)",
            id="forty-squares",
        ),
    ],
)
def test_bombs_are_refused_fast_and_located(text: str, expected: str, tmp_path: Path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    code, err, seconds = _build(path, capsys)
    assert (code, err) == (2, f"error: {expected.format(f=path)}\n")
    assert seconds < 1.0, f"took {seconds:.2f} s to refuse"


def test_a_repeat_under_the_limit_still_builds(tmp_path: Path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(NESTED_REPEATS.replace("times: 1000\n", "times: 30\n"))
    code, err, _ = _build(path, capsys, "--json")
    assert (code, err) == (0, "")


def test_device_file_is_refused(capsys):
    code, err, seconds = _build(Path("/dev/zero"), capsys)
    assert (code, err) == (2, "error: /dev/zero: is not a regular file (a device, pipe or socket); give a spec file\n")
    assert seconds < 1.0


def test_fifo_is_refused_without_blocking(tmp_path: Path, capsys):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    code, err, _ = _build(fifo, capsys)  # would block forever on open() if it were read
    assert (code, err) == (2, f"error: {fifo}: is not a regular file (a device, pipe or socket); give a spec file\n")


def test_oversized_spec_is_refused(tmp_path: Path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text("name: big\ninput: [10]\nlayers:\n  - relu\n" + "# padding\n" * 1_100_000)
    code, err, _ = _build(path, capsys)
    assert (code, err) == (2, f"error: {path}: file too large for a spec (more than 10,000,000 bytes)\n")


# --- expressions: every failure located, never an internal error -------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("min(5)", "'min(5)': min takes two or more numbers, e.g. min(8, $c // 4)"),
        ("max(5)", "'max(5)': max takes two or more numbers, e.g. max(8, $c // 4)"),
        ("int(1e308*10)", "'int(1e308*10)' gives an infinite number; only finite numbers"),
        ("1e308*10", "'1e308*10' gives an infinite number; only finite numbers"),
        ("round(1e308*10)", "'round(1e308*10)' gives an infinite number; only finite numbers"),
        ("10 // 0", "'10 // 0' divides by zero"),
        ("10 % 0", "'10 % 0' divides by zero"),
        ("1 / 0.0", "'1 / 0.0' divides by zero"),
        ("2**64", "'2**64' gives a number too large (20 digits; the limit is 2**62)"),
        ("10**1000", "'10**1000': that power is too large"),
        ("999999.0**64", "'999999.0**64' gives a number too large"),
        ("(-8)**0.5", "'(-8)**0.5' gives (1.7319121124709868e-16+2.8284271247461903j), not a real number"),
    ],
)
def test_expression_errors_are_located(expression: str, message: str, tmp_path: Path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(f'name: e\ninput: [10]\nlayers:\n  - relu\n  - linear: {{out_features: "{expression}"}}\n')
    code, err, _ = _build(path, capsys)
    assert (code, err) == (2, f"error: {path}:5:28: layers[1] linear: {message}\n")


# --- the forgotten flatten: valid torch, but warned about, located, once ----------------------------

NO_FLATTEN = """name: noflat
input: [1, 28, 28]
layers:
  - conv2d: {out_channels: 16, kernel_size: 5}
  - relu
  - linear: {out_features: 10}
"""


def _flatten_warning(path: Path, line: int, at: str, after: str, shape: str, out: str) -> str:
    return (
        f"warning: linear at {at} ({path}:{line}) {after}: it acts on the last dimension of {shape}, so the output "
        f"is {out}; add `- flatten` before it if you meant a classifier\n"
    )


def test_build_warns_once_about_a_linear_after_a_convolution(tmp_path: Path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(NO_FLATTEN)
    code = main(["build", str(path)])
    out, err = capsys.readouterr()
    assert code == 0  # linear on the last dimension is what torch does: the spec is valid
    assert err == _flatten_warning(path, 6, "layers[2]", "follows conv2d at layers[0]", "16×24×24", "16×24×10")
    assert "16×24×10" in out  # the table shows the output it warned about


def test_the_warning_is_in_the_json_and_the_python_api(tmp_path: Path, capsys):
    import json

    import netspec
    from netspec.errors import SpecWarning

    path = tmp_path / "spec.yaml"
    path.write_text(NO_FLATTEN)
    assert main(["build", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["warnings"] == [err.removeprefix("warning: ").rstrip("\n")]
    with pytest.warns(SpecWarning, match=r"linear at layers\[2\] .* follows conv2d"):
        net = netspec.infer_shapes(path)
    assert len(net.warnings) == 1 and net.output_shape == (16, 24, 10)


def test_one_warning_for_a_linear_written_once_in_a_repeat(tmp_path: Path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: r\ninput: [3, 8, 8]\nlayers:\n  - maxpool2d: {kernel_size: 2}\n  - repeat:\n      times: 3\n"
        "      layers:\n        - dropout\n        - linear: {out_features: 4}\n"
    )
    assert main(["build", str(path)]) == 0
    err = capsys.readouterr().err
    assert err == _flatten_warning(
        path, 9, "layers[1].repeat#0[1]", "follows maxpool2d at layers[0]", "3×4×4", "3×4×4"
    )


def test_a_linear_on_the_spec_input_image_is_warned_about(tmp_path: Path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text("name: mlp\ninput: [1, 28, 28]\nlayers:\n  - linear: {out_features: 10}\n")
    assert main(["build", str(path)]) == 0
    assert capsys.readouterr().err == _flatten_warning(
        path, 4, "layers[0]", "reads the spec's input", "1×28×28", "1×28×10"
    )


@pytest.mark.parametrize(
    "layers",
    [
        pytest.param("  - conv2d: {out_channels: 4, kernel_size: 3}\n  - flatten\n  - linear: {out_features: 10}\n",
                     id="flattened"),
        pytest.param("  - conv2d: {out_channels: 4, kernel_size: 3}\n  - permute: {dims: [0, 2, 3, 1]}\n"
                     "  - layernorm\n  - linear: {out_features: 16}\n", id="channels-last-as-convnext"),
        pytest.param("  - flatten: {start_dim: 2}\n  - linear: {out_features: 16}\n", id="tokens"),
    ],
)  # fmt: skip
def test_no_warning_when_the_layout_was_changed_on_purpose(layers: str, tmp_path: Path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: ok\ninput: [3, 8, 8]\nlayers:\n{layers}")
    assert main(["build", str(path), "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_every_zoo_spec_builds_without_a_warning():
    import warnings

    import netspec
    from tests.conftest import SPECS

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in sorted(SPECS.glob("*.yaml")):
            assert netspec.infer_shapes(path).warnings == [], path.name


def test_train_prints_the_warning_once(tmp_path: Path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: t\ninput: [1, 8, 8]\nlayers:\n  - conv2d: {out_channels: 4, kernel_size: 3}\n  - relu\n"
        "  - maxpool2d: {kernel_size: 2}\n  - linear: {out_features: 10}\n  - flatten\n  - linear: {out_features: 10}\n"
        "train: {dataset: synthetic, synthetic_size: 64, epochs: 1, batch_size: 32}\n"
    )
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1
    assert _flatten_warning(path, 7, "layers[3]", "follows maxpool2d at layers[2]", "4×3×3", "4×3×10") in err


# --- numeric options: finite, in range, named in the message -----------------------------------------

MLP = "name: m\ninput: [4]\nlayers:\n  - linear: {out_features: 10}\ntrain: {dataset: synthetic, epochs: 1}\n"


def _refused(argv: list[str], capsys) -> str:
    """The last stderr line of a command refused with exit code 2 (argparse exits; netspec returns 2)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    return capsys.readouterr().err.rstrip("\n").splitlines()[-1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--lr", "inf"], "error: argument --lr: must be a finite number, got 'inf'"),
        (["--lr", "nan"], "error: argument --lr: must be a finite number, got 'nan'"),
        (["--weight-decay", "inf"], "error: argument --weight-decay: must be a finite number, got 'inf'"),
        (["--momentum", "nan"], "error: argument --momentum: must be a finite number, got 'nan'"),
        (["--grad-clip=-inf"], "error: argument --grad-clip: must be a finite number, got '-inf'"),
        (
            ["--seed", "99999999999999999999999"],
            "error: argument --seed: must be at most 9,223,372,036,854,775,807, got 99,999,999,999,999,999,999,999",
        ),
        (["--seed", "-1"], "error: argument --seed: must be at least 0, got -1"),
        (["--synthetic-size", "1e11"], "error: argument --synthetic-size: must be at most 1,000,000, got 100,000,000,000"),
        (["--synthetic-size", "1e999999999"], "error: argument --synthetic-size: 1e999999999 is far too large"),
        (["--seed", "9" * 5000], f"error: argument --seed: {'9' * 5000} is far too large"),
        (["--synthetic-size", "1e1.5"], "error: argument --synthetic-size: expected a whole number, got '1e1.5'"),
        (["--epochs", "2.5"], "error: argument --epochs: expected a whole number, got '2.5'"),
        (["--set", "a"], "error: --set a: write NAME=VALUE, e.g. --set width=64"),
        (["--set", "=3"], "error: --set =3: write NAME=VALUE, e.g. --set width=64"),
        (["--set", "x=[1,"], "error: --set x=[1,: cannot read '[1,' as a value (a number, true/false or a word)"),
        (["--set", "x={a: 1}"], "error: --set x={a: 1}: cannot read '{a: 1}' as a value: a variable is a number, "
                                "true/false or a word"),
        (["--set", "x=nan"], "error: --set x=nan: nan is not a finite number"),
    ],
)
def test_numeric_options_are_checked(options: list[str], message: str, tmp_path: Path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(MLP)
    assert _refused(["train", str(spec), "--out", str(tmp_path / "run"), *options], capsys) == message
    assert not (tmp_path / "run").exists()


def test_sweep_seed_is_in_numpy_range(tmp_path: Path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(MLP)
    assert _refused(["sweep", str(spec), "--sweep-seed", str(2**32)], capsys) == (
        "error: argument --sweep-seed: must be at most 4,294,967,295, got 4,294,967,296"
    )


def test_a_whole_number_in_scientific_notation_is_read_exactly(tmp_path: Path, capsys):
    import json

    spec = tmp_path / "spec.yaml"
    spec.write_text(MLP)
    argv = ["train", str(spec), "--out", str(tmp_path / "run"), "--synthetic-size", "2e2", "--batch-size", "1e2",
            "--seed", "9223372036854775807", "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    settings = (tmp_path / "run" / "spec.yaml").read_text()
    assert "synthetic_size: 200" in settings and "seed: 9223372036854775807" in settings, result


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ("{lr: .inf}", "{f}:5:13: train.lr: input should be a finite number, got inf"),
        (
            "{seed: 100000000000000000000}",
            "{f}:5:15: train.seed: input should be less than or equal to 9223372036854775807, got 100000000000000000000",
        ),
        (
            "{synthetic_size: 100000000000}",
            "{f}:5:25: train.synthetic_size: input should be less than or equal to 1000000, got 100000000000",
        ),
    ],
)
def test_the_train_section_is_checked_as_the_options_are(train: str, message: str, tmp_path: Path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: m\ninput: [4]\nlayers:\n  - linear: {{out_features: 3}}\ntrain: {train}\n")
    code, err, _ = _build(spec, capsys)
    assert (code, err) == (2, f"error: {message.format(f=spec)}\n")


# --- a network too large to allocate, a name too long for a file ------------------------------------


@pytest.mark.parametrize("width", ["1000000000000", "1000000000000000000000000000000"])
def test_a_network_too_wide_to_allocate_is_refused_before_allocating(width: str, tmp_path: Path, capsys):
    import re

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: wide\ninput: [1, 8, 8]\nlayers:\n  - flatten\n  - linear: {{out_features: {width}}}\n"
        "  - linear: {out_features: 10}\ntrain: {dataset: synthetic, synthetic_size: 64, epochs: 1}\n"
    )
    start = time.perf_counter()
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    params = f"{(64 + 1 + 10) * int(width) + 10:,}"
    assert re.fullmatch(
        rf"error: {re.escape(str(spec))}:5:5: layers\[1\] linear: the network would have {params} parameters "
        r"\(\S+ \S+ as float32\), more than the [\d.,]+ \S+ of memory available; refused before allocating any; "
        rf"the largest layer is layers\[1\] linear with {(64 + 1) * int(width):,} \(output {width}\): check its widths\n",
        err,
    ), err
    assert time.perf_counter() - start < 5
    # The summary of the same spec still works: it allocates nothing.
    assert main(["build", str(spec), "--json"]) == 0


def test_check_fits_against_a_given_amount_of_memory():
    import netspec
    from netspec.compiler import check_memory
    from netspec.errors import SpecError

    net = netspec.infer_shapes("name: m\ninput: [100]\nlayers:\n  - linear: {out_features: 1000}\n")
    check_memory(net, available=101_000 * 4)  # 101,000 parameters fit in 404,000 bytes
    with pytest.raises(SpecError, match=r"101,000 parameters \(394.5 KiB as float32\), more than the 390.6 KiB"):
        check_memory(net, available=400_000)


@pytest.mark.parametrize("command", [["build"], ["export", "--format", "python"]])
def test_a_spec_name_longer_than_a_file_name_allows_is_refused(command: list[str], tmp_path: Path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: {'n' * 300}\ninput: [4]\nlayers:\n  - linear: {{out_features: 10}}\n")
    code = main([command[0], str(spec), *command[1:]])
    assert (code, capsys.readouterr().err) == (
        2,
        f"error: {spec}:1:7: name: string should have at most 100 characters, got '{'n' * 40}...' (300 characters)\n",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written


def test_a_checkpoint_whose_spec_is_a_bomb_is_refused(tmp_path: Path, capsys):
    import torch
    from PIL import Image

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: small\ninput: [1, 8, 8]\nlayers:\n  - flatten\n  - linear: {out_features: 10}\n"
        "train: {dataset: synthetic, synthetic_size: 64, epochs: 1, batch_size: 32}\n"
    )
    run = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(run)]) == 0
    capsys.readouterr()
    for name in ("best.pt", "last.pt"):
        checkpoint = torch.load(run / name, weights_only=False)
        checkpoint["spec"]["layers"].insert(0, {"repeat": {"times": 1_000_000_000, "layers": ["relu"]}})
        torch.save(checkpoint, run / name)
    image = tmp_path / "digit.png"
    Image.new("L", (8, 8), 128).save(image)
    expected = (
        f"error: {run / 'best.pt'} (its spec): layers[0] repeat: repeat ×1,000,000,000 expands the spec to more "
        "than 100,000 layers (at least 1,000,000,000); no network needs that many: check the repeat counts\n"
    )
    for argv in (["eval", str(run)], ["predict", str(run), str(image)]):
        start = time.perf_counter()
        code = main(argv)
        assert (code, capsys.readouterr().err) == (2, expected), argv
        assert time.perf_counter() - start < 1.0, argv


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u@localhost:99999/db", "port 99999 is out of range (1 to 65535)"),
        ("postgresql://u@localhost:abc/db", "the port is not a number (e.g. postgresql://user@host:5432/db)"),
    ],
)
def test_a_storage_url_with_a_bad_port_is_refused(url: str, message: str, tmp_path: Path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(MLP)
    argv = ["sweep", str(spec), "--grid", "lr=0.1,0.2", "--storage", url, "--out", str(tmp_path / "sweep")]
    assert _refused(argv, capsys) == f"error: --storage {url}: {message}"


def test_an_expression_too_long_to_be_a_width_is_refused(tmp_path: Path, capsys):
    path = tmp_path / "spec.yaml"
    expression = "$w" + " + $w" * 3000  # Python's own parser would recurse too deeply on it
    path.write_text(f'name: e\ninput: [10]\nvars: {{w: 1}}\nlayers:\n  - linear: {{out_features: "{expression}"}}\n')
    code, err, seconds = _build(path, capsys)
    assert (code, err) == (
        2,
        f"error: {path}:5:28: layers[0] linear: an expression of 15,002 characters is too long (at most 500)\n",
    )
    assert seconds < 1.0


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (
            "  - conv2d: {out_channels: 4, kernel_size: 3}\n",
            "{f}:4:5: layers[0] conv2d: one example's output of layers[0] conv2d (4×999998×999998) would take",
        ),
        ("", "{f}:2:8: one example of the input 3×1000000×1000000 would take"),
    ],
)
def test_an_input_too_large_for_memory_is_refused_before_the_data_is_made(
    first: str, message: str, tmp_path: Path, capsys
):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: big\ninput: [3, 1000000, 1000000]\nlayers:\n{first}  - adaptive_avgpool2d: {{output_size: 1}}\n"
        "  - flatten\n  - linear: {out_features: 10}\ntrain: {dataset: synthetic, synthetic_size: 64, epochs: 1}\n"
    )
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {message.format(f=spec)} "), err
    assert "as float32, more than the" in err and "refused before allocating any" in err


def test_only_rank_0_of_a_distributed_job_prints_the_warning(tmp_path: Path, capsys, monkeypatch):
    import argparse

    import netspec
    from netspec import cli

    path = tmp_path / "spec.yaml"
    path.write_text(NO_FLATTEN)
    args = argparse.Namespace(func=lambda _: netspec.infer_shapes(path) and 0)
    for rank, printed in (("1", 0), ("0", 1)):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", rank)
        assert cli._with_spec_warnings(args) == 0
        assert capsys.readouterr().err.count("warning: linear at layers[2]") == printed, rank


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": float("inf")}, "--lr: input should be a finite number, got inf"),
        ({"seed": 2**64}, "--seed: input should be less than or equal to 9223372036854775807, got 18446744073709551616"),
        ({"synthetic_size": 10**11}, "--synthetic-size: input should be less than or equal to 1000000, got 100000000000"),
    ],
)
def test_the_python_api_checks_the_same_settings(overrides: dict, message: str, tmp_path: Path):
    from netspec.errors import UsageError
    from netspec.train import train

    spec = tmp_path / "spec.yaml"
    spec.write_text(MLP)
    with pytest.raises(UsageError) as caught:
        train(spec, overrides, out=tmp_path / "run")
    assert str(caught.value) == message
    assert not (tmp_path / "run").exists()


def test_a_grid_value_that_is_not_finite_is_refused(tmp_path: Path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(MLP)
    argv = ["sweep", str(spec), "--grid", "lr=nan,0.1", "--out", str(tmp_path / "sweep")]
    assert _refused(argv, capsys) == "error: --grid lr=nan,0.1: nan is not a finite number"
    assert not (tmp_path / "sweep").exists()
