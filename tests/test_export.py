"""`netspec export`: ONNX, torch.export and plain PyTorch, each checked here on its own terms."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import netspec
from netspec.exporter import class_name, load_python_module
from netspec.expr import FUNCTIONS, OPERATORS
from tests.conftest import SHARED_DATA, SPECS, TIMM_ZOO, TORCHVISION_ZOO, ZOO, requires_mnist, run_cli

# ONNX and pt2 of these take several seconds each on 2 cores: they run under -m slow.
HEAVY = {"d2l_alexnet", "d2l_vgg11", "d2l_googlenet", "d2l_densenet", "mobilenet_v2_small", *TORCHVISION_ZOO, *TIMM_ZOO}
LIGHT = [n for n in ZOO if n not in HEAVY]
FORMAT_CASES = [pytest.param(n, id=n) for n in LIGHT] + [pytest.param(n, id=n, marks=pytest.mark.slow) for n in HEAVY]


def _model_and_batch(name: str, batch: int = 5) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    model = netspec.build(SPECS / f"{name}.yaml").eval()
    return model, torch.randn(batch, *model.net_shape.input_shape)


# The timm specs' Python exports take 20-45 s each on 2 cores (CaiT's 24 blocks): they run under -m slow.
PYTHON_CASES = [pytest.param(n, id=n, marks=[pytest.mark.slow] if n in TIMM_ZOO else []) for n in ZOO]


@pytest.mark.parametrize("name", PYTHON_CASES)
def test_python_export_is_plain_torch_with_netspec_keys_and_identical_outputs(name: str, tmp_path: Path):
    result = netspec.export(SPECS / f"{name}.yaml", format="python", out=tmp_path / f"{name}.py")
    source = result.path.read_text()
    imports = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imports == ({"torch", "torchvision"} if name in ("swin_t", "maxvit_t") else {"torch"})
    model, x = _model_and_batch(name)
    generated = getattr(load_python_module(result.path), class_name(name))().eval()
    assert list(generated.state_dict()) == list(model.state_dict())
    generated.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(generated(x), model(x), rtol=0, atol=1e-6)


def test_python_export_passes_ruff(tmp_path: Path):
    for name in ("lenet", "d2l_googlenet", "unet_small", "se_resnet_small", "convnext_tiny", "swin_t", "vit_b_16"):
        netspec.export(SPECS / f"{name}.yaml", format="python", out=tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_export_reads_like_the_network(tmp_path: Path):
    path = netspec.export(SPECS / "unet_small.yaml", format="python", out=tmp_path).path
    source = path.read_text()
    assert "class UnetSmall(nn.Module):" in source
    assert "class DoubleConv(nn.Sequential):" in source  # one class per block, a chain needs no forward
    assert "self.up3 = nn.ConvTranspose2d(128, 64, 2, stride=2)  # 64×16×16" in source  # in_channels filled in
    assert "enc3 = self.enc3(x)  # 64×16×16" in source  # a named tap is a named variable
    assert "x = torch.cat([enc3, up3], dim=1)  # 128×16×16" in source  # with the shape of the line
    d2l_googlenet = netspec.export(SPECS / "d2l_googlenet.yaml", format="python", out=tmp_path).path.read_text()
    assert "def __init__(self, in_channels: int, c1: int, c2a: int, c2b: int, c3a: int, c3b: int, c4: int)" in (
        d2l_googlenet
    )
    assert "nn.Conv2d(c2a, c2b, 3, padding=1)" in d2l_googlenet  # sizes as the block's parameters
    assert "return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)" in (
        d2l_googlenet
    )
    assert "self.inception1 = Inception(192, 64, 96, 128, 16, 32, 32)  # 256×12×12" in d2l_googlenet
    assert not re.search(r"\]\[|\)\[\d", d2l_googlenet)  # no chained subscripts


def _code_lines(source: str) -> int:
    """Lines of code: no blank lines, comments or docstrings (as the book's code is counted)."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None:
            first = node.body[0]
            docstrings.update(range(first.lineno, first.end_lineno + 1))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    )


@pytest.mark.parametrize(("name", "book_lines"), [("d2l_resnet18", 45), ("d2l_googlenet", 60)])
def test_python_export_is_as_short_as_the_books_code(name: str, book_lines: int, tmp_path: Path):
    # d2l's Residual + ResNet-18 stages are about 45 lines, its Inception + GoogLeNet about 60.
    source = netspec.export(SPECS / f"{name}.yaml", format="python", out=tmp_path).path.read_text()
    assert _code_lines(source) <= 1.5 * book_lines


@pytest.mark.parametrize("name", FORMAT_CASES)
def test_onnx_export_runs_in_onnxruntime_with_any_batch_size(name: str, tmp_path: Path):
    import onnx
    import onnxruntime

    torch.manual_seed(1)  # the exported model's weights: the same as _model_and_batch's
    result = netspec.export(SPECS / f"{name}.yaml", format="onnx", out=tmp_path)
    model = onnx.load(str(result.path))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch dimension
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        torch_model, x = _model_and_batch(name, batch)
        (got,) = session.run(["output"], {"input": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), torch_model(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", FORMAT_CASES)
def test_pt2_export_reloads_and_matches(name: str, tmp_path: Path):
    torch.manual_seed(1)
    result = netspec.export(SPECS / f"{name}.yaml", format="pt2", out=tmp_path)
    program = torch.export.load(str(result.path)).module()
    for batch in (1, 5):
        model, x = _model_and_batch(name, batch)
        with torch.no_grad():
            torch.testing.assert_close(program(x), model(x), rtol=0, atol=1e-5)


def test_fixed_batch_size(tmp_path: Path):
    import onnx

    result = netspec.export(SPECS / "lenet.yaml", format="onnx", out=tmp_path, batch=4)
    assert onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4


def test_cli_export_json(tmp_path: Path):
    result = run_cli("export", "specs/lenet.yaml", "--format", "pt2", "--out", str(tmp_path / "l.pt2"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "pt2" and Path(data["path"]).exists() and data["max_abs_diff"] <= 1e-5


def test_a_layer_the_exporter_cannot_take_is_named(write_spec, tmp_path: Path):
    # Bilinear resizing with align_corners has no ONNX operator before opset 11.
    path = write_spec(
        "name: up\ninput: [3, 8, 8]\nlayers:\n  - conv2d: {out_channels: 4, kernel_size: 3}\n"
        "  - upsample: {scale_factor: 2, mode: bilinear, align_corners: true}\n"
    )
    out = tmp_path / "up.onnx"
    result = run_cli("export", str(path), "--format", "onnx", "--opset", "10", "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot export up to onnx at layers[1] upsample: ")
    assert "align_corners" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite"], "invalid choice: 'tflite'"),
        (["--format", "onnx", "--batch", "0"], "must be at least 1"),
        (["--format", "python", "--checkpoint", "missing.pt"], "missing.pt: no such checkpoint file"),
        (["--format", "python", "--out", "no/such/folder/x.py"], "no/such/folder: no such folder"),
    ],
)
def test_cli_export_bad_input(args: list[str], message: str):
    result = run_cli("export", "specs/lenet.yaml", *args)
    assert result.returncode in (1, 2)
    assert message in result.stderr and "Traceback" not in result.stderr


@requires_mnist
def test_trained_lenet_exports_with_its_weights_and_keeps_its_accuracy(tmp_path: Path):
    from netspec.data import DeviceLoader
    from netspec.metrics import evaluate
    from netspec.predict import load_trained, run_split

    run = tmp_path / "run"
    trained = run_cli(
        "train", "specs/lenet.yaml", "--dataset", "mnist", "--data-root", str(SHARED_DATA), "--epochs", "1",
        "--device", "cpu", "--out", str(run), "--no-progress",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    checkpoint = run / "best.pt"
    evaluated = run_cli(
        "eval", "specs/lenet.yaml", "--checkpoint", str(checkpoint), "--dataset", "mnist",
        "--data-root", str(SHARED_DATA), "--device", "cpu", "--json",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    eval_accuracy = json.loads(evaluated.stdout)["test_accuracy"]

    for fmt, file in (("python", "lenet.py"), ("onnx", "lenet.onnx"), ("pt2", "lenet.pt2")):
        result = run_cli("export", "specs/lenet.yaml", "--format", fmt, "--checkpoint", str(checkpoint),
                         "--out", str(tmp_path / file))  # fmt: skip
        assert result.returncode == 0, result.stderr

    # The python export and the state_dict written beside it, exactly as its docstring says to load them.
    source = (tmp_path / "lenet.py").read_text()
    assert 'model.load_state_dict(torch.load("lenet.pt", weights_only=True))' in source
    generated = load_python_module(tmp_path / "lenet.py").Lenet()
    generated.load_state_dict(torch.load(tmp_path / "lenet.pt", weights_only=True))
    # Evaluated on the test split the run recorded, as `netspec eval` does.
    cfg, data, test = run_split(load_trained(run))
    loader = DeviceLoader(test, data.info, cfg.test_batch_size, torch.device("cpu"))
    accuracy = evaluate(generated, loader, 10).accuracy
    assert accuracy == pytest.approx(eval_accuracy, abs=1e-9)

    # ONNX and pt2 carry the trained weights and the run's normalization: raw pixels in, the checkpoint's
    # outputs on the normalized test images out.
    import onnxruntime

    trained_model = netspec.build(SPECS / "lenet.yaml").eval()
    netspec.compiler.load_weights(trained_model, checkpoint)
    x, _ = next(iter(loader))
    pixels = test.inputs[: len(x)].float()
    with torch.no_grad():
        expected = trained_model(x)
    session = onnxruntime.InferenceSession(str(tmp_path / "lenet.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(["output"], {"input": pixels.numpy()})
    torch.testing.assert_close(torch.from_numpy(onnx_out), expected, rtol=0, atol=1e-4)
    program = torch.export.load(str(tmp_path / "lenet.pt2")).module()
    torch.testing.assert_close(program(pixels), expected, rtol=0, atol=1e-5)


def test_out_with_a_trailing_slash_is_a_folder_and_other_formats_are_never_overwritten(tmp_path: Path):
    folder = tmp_path / "exp"
    result = run_cli("export", "specs/mnist_cnn.yaml", "--format", "python", "--out", f"{folder}/")
    assert result.returncode == 0, result.stderr
    assert (folder / "mnist_cnn.py").is_file()  # a folder was created, not a file named "exp"
    result = run_cli("export", "specs/mnist_cnn.yaml", "--format", "onnx", "--out", f"{folder}/")
    assert result.returncode == 0, result.stderr
    assert (folder / "mnist_cnn.onnx").is_file() and (folder / "mnist_cnn.py").is_file()
    before = (folder / "mnist_cnn.py").read_bytes()
    result = run_cli("export", "specs/mnist_cnn.yaml", "--format", "onnx", "--out", str(folder / "mnist_cnn.py"))
    assert result.returncode == 2
    assert "exists and is not a .onnx file" in result.stderr and "Traceback" not in result.stderr
    assert (folder / "mnist_cnn.py").read_bytes() == before
    result = run_cli("export", "specs/mnist_cnn.yaml", "--format", "pt2", "--out", str(tmp_path / "model"))
    assert result.returncode == 0 and (tmp_path / "model.pt2").is_file()  # a name without a suffix gets one


def _checkpoint_with_normalization(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A run's checkpoint as netspec train writes it: weights, class names and the training data's mean/std."""
    from netspec.fileio import save_checkpoint

    torch.manual_seed(3)
    model = netspec.build(SPECS / "mnist_cnn.yaml").eval()
    path = tmp_path / "best.pt"
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "classes": [f"digit {d}" for d in range(10)],
            "normalization": {"mean": [0.1307], "std": [0.3081]},
            "data": {"kind": "image"},
        },
    )
    return path, model


def test_checkpoint_exports_carry_the_input_normalization(tmp_path: Path):
    import onnx
    import onnxruntime

    checkpoint, model = _checkpoint_with_normalization(tmp_path)
    raw = torch.randint(0, 256, (4, 1, 28, 28)).float()  # pixels as read from image files
    with torch.no_grad():
        expected = model((raw / 255 - 0.1307) / 0.3081)
    onnx_file = netspec.export(SPECS / "mnist_cnn.yaml", format="onnx", checkpoint=checkpoint, out=tmp_path).path
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output"], {"input": raw.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=1e-4)
    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert json.loads(props["netspec_classes"])[3] == "digit 3" and json.loads(props["netspec_mean"]) == [0.1307]
    program = torch.export.load(
        str(netspec.export(SPECS / "mnist_cnn.yaml", format="pt2", checkpoint=checkpoint, out=tmp_path).path)
    ).module()
    torch.testing.assert_close(program(raw), expected, rtol=0, atol=1e-5)
    # The Python file states the normalization and has a preprocess function for raw images.
    result = netspec.export(SPECS / "mnist_cnn.yaml", format="python", checkpoint=checkpoint, out=tmp_path)
    source = result.path.read_text()
    assert "MEAN = (0.1307,)" in source and "def preprocess(" in source and 'CLASSES = ["digit 0",' in source
    module = load_python_module(result.path)
    generated = module.MnistCnn().eval()
    generated.load_state_dict(torch.load(result.weights_path, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(generated(module.preprocess(raw)), expected, rtol=0, atol=1e-6)
    # --no-preprocess: the ONNX model takes normalized inputs, as the model itself does.
    bare = netspec.export(
        SPECS / "mnist_cnn.yaml", format="onnx", checkpoint=checkpoint, out=tmp_path / "bare.onnx", preprocess=False
    ).path
    session = onnxruntime.InferenceSession(str(bare), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output"], {"input": ((raw / 255 - 0.1307) / 0.3081).numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=1e-4)


# A block whose sizes use every function and operator an expression may: each must export as the expression it is.
EVERY_FUNCTION_SPEC = """
name: every_function
input: [3, 8, 8]
blocks:
  stage:
    params: {w: 16}
    layers:
      - conv2d: {out_channels: "round(0.5 * $w)", kernel_size: 1}
      - conv2d: {out_channels: "max(8, $w // 4)", kernel_size: 1}
      - conv2d: {out_channels: "min($w, 3 * $w) - 1", kernel_size: 1}
      - conv2d: {out_channels: "int($w / 2) + $w % 3", kernel_size: 1}
      - conv2d: {out_channels: "abs(-$w) + 2 ** 2", kernel_size: 1}
      - conv2d: {out_channels: "+$w", kernel_size: 1}
layers:
  - stage: {w: 16}
  - stage: {w: 40}
  - flatten
  - linear: {out_features: 10}
"""


def test_every_expression_function_exports_as_its_expression(write_spec, tmp_path: Path):
    written = re.findall(r'out_channels: "([^"]+)"', EVERY_FUNCTION_SPEC)
    used = {n.func.id for e in written for n in ast.walk(ast.parse(e.replace("$", ""))) if isinstance(n, ast.Call)}
    assert used == set(FUNCTIONS)
    operators = {type(n.op) for e in written for n in ast.walk(ast.parse(e.replace("$", ""))) if hasattr(n, "op")}
    assert operators == set(OPERATORS)
    spec = write_spec(EVERY_FUNCTION_SPEC)
    source = netspec.export(spec, format="python", out=tmp_path / "every.py").path.read_text()
    assert "def __init__(self, in_channels: int, w: int = 16)" in source  # `w` a parameter, not one per use
    assert "nn.Conv2d(in_channels, round(0.5 * w), 1)" in source
    for expression in ("max(8, w // 4)", "min(w, 3 * w) - 1", "int(w / 2) + w % 3", "abs(-w) + 4", "+w, 1)"):
        assert expression in source
    generated = load_python_module(tmp_path / "every.py").EveryFunction()
    model = netspec.build(spec)
    assert {k: v.shape for k, v in generated.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize("fmt", ["python", "onnx", "pt2"])
def test_attention_parts_export_in_every_format(fmt: str, tmp_path: Path):
    # scale, neg, mean, sum, subtract, matmul (with transpose_b), relative_bias (levit and swin rules), a
    # parameter read through a view, and multihead_attention over groups of tokens; export checks each format
    # against the netspec model on a batch of 3 and fails when they differ.
    path = Path(__file__).parent / "fixtures" / "memory" / "attention_parts.yaml"
    torch.manual_seed(1)
    result = netspec.export(path, format=fmt, out=tmp_path)
    assert result.path.exists()
    if fmt == "python":
        source = result.path.read_text()
        assert "torch.matmul(q, k.transpose(-2, -1))" in source and "x - self." in source
        assert ".view(1, 1, 1, 32)" in source  # the parameter stored as 32, read as 1×1×32
