"""Pretrained weights (`--init-from torchvision:NAME`), resize left to the data, `export RUN`, exit codes and
did-you-mean for options."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import netspec
from netspec.config import TrainConfig
from netspec.errors import UsageError
from netspec.weights import start_from
from tests.conftest import SPECS, requires_mnist, run_cli
from tests.test_own_data import mnist_pngs

TINY_RESIZE = """\
name: tiny_resize
input: [1, 20, 20]
layers:
  - conv2d: {out_channels: 4, kernel_size: 3}
  - relu
  - flatten
  - linear: {out_features: 10}
train: {dataset: mnist, resize: true, epochs: 1, batch_size: 16}
"""


def _resnet18_file(torch_home: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A real ResNet-18 state_dict (random init) where torch.hub's cache under TORCH_HOME keeps torchvision's
    resnet18 weights: the file name of its download URL, in hub/checkpoints."""
    import torchvision

    weights = torchvision.models.ResNet18_Weights.DEFAULT
    torch.manual_seed(3)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = torch_home / "hub" / "checkpoints" / os.path.basename(weights.url)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path, state


def _small_resnet18(write_spec) -> Path:
    return write_spec((SPECS / "resnet18.yaml").read_text().replace("[3, 224, 224]", "[3, 32, 32]"))


# --- resize is the data's business ---------------------------------------------------------------


@requires_mnist
def test_a_spec_with_resize_true_trains_on_a_user_folder(tmp_path: Path, write_spec):
    data = mnist_pngs(tmp_path / "digits", per_class=3, layout="classes")
    spec = write_spec(TINY_RESIZE)
    result = run_cli("train", str(spec), "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "--resize applies" not in result.stdout + result.stderr
    assert (tmp_path / "run" / "last.pt").is_file()


def test_no_resize_turns_a_specs_resize_off(tmp_path: Path, write_spec):
    spec = write_spec(TINY_RESIZE)
    result = run_cli("train", str(spec), "--no-resize", "--data-root", str(tmp_path), "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "takes input 1×20×20 but dataset mnist has images of 1×28×28" in result.stderr
    assert "Traceback" not in result.stderr


# --- --init-from torchvision:NAME ------------------------------------------------------------------


def test_torchvision_weights_load_from_torch_hubs_cache_by_position(tmp_path: Path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _, state = _resnet18_file(tmp_path / "torch")
    model = netspec.build(SPECS / "resnet18.yaml")
    note = start_from(model, TrainConfig(init_from="torchvision:resnet18"))
    assert note == "init from torchvision:resnet18.IMAGENET1K_V1: loaded 122 of 122 tensors"
    reference = torchvision.models.resnet18(weights=None)
    reference.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference.eval()(x))


def test_a_partial_load_is_refused_and_with_skip_mismatched_its_counts_add_up(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _resnet18_file(tmp_path / "torch")
    d2l = netspec.build(SPECS / "d2l_resnet18.yaml")  # biased convs, shortcuts without batch norm: 127 tensors
    with pytest.raises(UsageError, match=r"it holds 122 tensors but the network has 127.*--skip-mismatched"):
        start_from(d2l, TrainConfig(init_from="torchvision:resnet18"))
    note = start_from(d2l, TrainConfig(init_from="torchvision:resnet18", skip_mismatched=True))
    loaded, total = map(int, re.search(r"loaded (\d+) of (\d+) tensors", note).groups())
    skipped = int(re.search(r"skipped (\d+) that do not fit", note).group(1))
    beyond = int(re.search(r"(\d+) beyond the file's 122 tensors", note).group(1))
    assert total == 127 and loaded + skipped + beyond == total and beyond == 5 and loaded > 0


def test_init_from_torchvision_trains_with_a_new_head(tmp_path: Path, write_spec):
    torch_home = tmp_path / "torch"
    _resnet18_file(torch_home)
    spec = _small_resnet18(write_spec)
    common = ["--init-from", "torchvision:resnet18", "--set", "classes=10", "--synthetic-size", "16", "--batch-size",
              "8", "--epochs", "1"]  # fmt: skip
    env = {"TORCH_HOME": str(torch_home)}
    refused = run_cli("train", str(spec), *common, "--out", str(tmp_path / "r1"), env=env)
    assert refused.returncode == 2, refused.stderr
    assert "2 of 122 tensor(s) do not fit: fc.weight" in refused.stderr and "--skip-mismatched" in refused.stderr
    assert not (tmp_path / "r1").exists()
    result = run_cli(
        "train", str(spec), *common, "--skip-mismatched", "--out", str(tmp_path / "r2"), "--no-progress", env=env
    )
    assert result.returncode == 0, result.stderr
    assert (
        "init from torchvision:resnet18.IMAGENET1K_V1: loaded 120 of 122 tensors; skipped 2 that do not fit: "
        "fc.weight, fc.bias (kept at their initialization)" in result.stdout
    )


def test_weights_missing_from_the_cache_name_the_path_and_url(tmp_path: Path, write_spec):
    spec = _small_resnet18(write_spec)
    result = run_cli(
        "train", str(spec), "--init-from", "torchvision:resnet18", "--set", "classes=10", "--synthetic-size", "16",
        "--out",
        str(tmp_path / "run"), env={"TORCH_HOME": str(tmp_path / "empty")},
    )  # fmt: skip
    assert result.returncode == 2
    expected = tmp_path / "empty" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in result.stderr
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in result.stderr
    assert "--download" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("torchvision:resnet81", "torchvision has no model named 'resnet81'; did you mean torchvision:resnet18?"),
        ("torchvision:resnet18.IMAGENET9K", "has weights IMAGENET1K_V1, not IMAGENET9K"),
        ("nowhere/weights.pth", "--init-from nowhere/weights.pth: no such file (or give torchvision:NAME"),
    ],
)
def test_unknown_weights_are_a_usage_error(source: str, message: str):
    model = netspec.build(SPECS / "resnet18.yaml")
    with pytest.raises(UsageError) as caught:
        start_from(model, TrainConfig(init_from=source))
    assert message in str(caught.value)


def test_timm_weights_come_through_timm_offline_unless_download(monkeypatch):
    # timm's own API, stood in for: what it is asked, and with which offline setting; its errors become one line.
    import sys
    import types

    import torchvision

    calls = []

    def create_model(name: str, pretrained: bool = False):
        calls.append((name, pretrained, os.environ.get("HF_HUB_OFFLINE")))
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise OSError("We have no connection or you passed local_files_only, so the file is not in the cache")
        return torchvision.models.resnet18(weights=None)

    fake = types.SimpleNamespace(is_model=lambda name: name == "resnet18", list_models=lambda: ["resnet18"],
                                 create_model=create_model)  # fmt: skip
    monkeypatch.setitem(sys.modules, "timm", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = netspec.build(SPECS / "resnet18.yaml")
    with pytest.raises(UsageError) as caught:
        start_from(model, TrainConfig(init_from="timm:resnet18"))
    assert "timm:resnet18: timm could not load its pretrained weights from the Hugging Face cache" in str(caught.value)
    assert "OSError: We have no connection" in str(caught.value) and "pass --download" in str(caught.value)
    note = start_from(model, TrainConfig(init_from="timm:resnet18", download=True))
    assert note == "init from timm:resnet18: loaded 122 of 122 tensors"
    assert calls == [("resnet18", True, "1"), ("resnet18", True, None)] and "HF_HUB_OFFLINE" not in os.environ
    with pytest.raises(UsageError, match="timm has no model named 'resnet81'; did you mean timm:resnet18"):
        start_from(model, TrainConfig(init_from="timm:resnet81"))


def test_timm_weights_need_timm():
    import importlib.util

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed")
    model = netspec.build(SPECS / "resnet18.yaml")
    with pytest.raises(UsageError, match="timm is not installed"):
        start_from(model, TrainConfig(init_from="timm:resnet18"))


# --- exit codes and did-you-mean -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "specs/lenet.yaml", "--data-root", "{tmp}/nowhere", "--out", "{tmp}/r"],
            "dataset fashion_mnist not found",
        ),
        (["train", "specs/lenet.yaml", "--data", "{tmp}/nowhere", "--out", "{tmp}/r"], "no such file or folder"),
        (["eval", "{tmp}"], "a folder without best.pt or last.pt"),
        (["eval", "{tmp}/nowhere"], "no such run folder or checkpoint"),
        (
            ["export", "specs/lenet.yaml", "--format", "onnx", "--checkpoint", "{tmp}/none.pt"],
            "no such checkpoint file",
        ),
        (["export", "{tmp}/nowhere", "--format", "onnx"], "no such file"),
    ],
)
def test_a_missing_file_or_folder_exits_2(tmp_path: Path, args: list[str], message: str):
    result = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["train", "specs/lenet.yaml", "--batchsize", "32"], "(--batchsize: did you mean --batch-size?)"),
        (["build", "specs/lenet.yaml", "--jsn", "--batch-szie=4"], "--jsn: did you mean --json?; --batch-szie: did"),
        (["export", "specs/lenet.yaml", "--format", "onxx"], "did you mean 'onnx'?"),
        (["trian", "specs/lenet.yaml"], "did you mean 'train'?"),
    ],
)
def test_a_misspelt_option_gets_did_you_mean(args: list[str], hint: str):
    result = run_cli(*args)
    assert result.returncode == 2
    assert hint in result.stderr.splitlines()[-1]


def test_did_you_mean_takes_the_subcommands_own_options():
    # --synthetic-size is train's; bench has no such option and export suggests nothing for it
    result = run_cli("export", "specs/lenet.yaml", "--format", "onnx", "--synthetic-sise", "3")
    assert result.returncode == 2 and "did you mean" not in result.stderr
    assert "did you mean --synthetic-size?" in run_cli("train", "specs/lenet.yaml", "--synthetic-sise", "3").stderr


# --- export RUN --------------------------------------------------------------------------------------


@pytest.fixture
def iris_run(tmp_path: Path, write_spec) -> Path:
    from netspec.train import train
    from tests.test_own_data import IRIS_MLP, iris_csv

    spec = write_spec(IRIS_MLP.replace("epochs: 40", "epochs: 2"), name="iris_mlp.yaml")
    train(spec, {"data": str(iris_csv(tmp_path / "iris.csv"))}, out=tmp_path / "runs" / "iris", report=lambda _: None,
          progress=False)  # fmt: skip
    return tmp_path / "runs" / "iris"


def test_export_takes_a_run_folder_with_its_spec_checkpoint_and_normalization(iris_run: Path, tmp_path: Path):
    import onnxruntime
    from sklearn.datasets import load_iris

    from netspec.predict import load_trained

    result = run_cli("export", str(iris_run), "--format", "onnx", "--out", str(tmp_path / "out") + "/")
    assert result.returncode == 0, result.stderr
    assert "input: raw feature values, standardized inside" in result.stdout
    onnx_file = tmp_path / "out" / "iris_mlp.onnx"
    raw = torch.tensor(load_iris().data[:7], dtype=torch.float32)  # rows as the CSV holds them
    trained = load_trained(iris_run)  # what `netspec predict runs/iris` uses: best.pt and its normalization
    assert trained.checkpoint.name == "best.pt"
    mean, std = torch.tensor(trained.info.mean), torch.tensor(trained.info.std)
    with torch.no_grad():
        expected = trained.model((raw - mean) / std)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output"], {"input": raw.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=1e-4)
    # The Python API takes the run folder too, and --checkpoint picks another of its checkpoints.
    program = netspec.export(iris_run, format="pt2", checkpoint=iris_run / "last.pt", out=tmp_path / "out" / "x.pt2")
    assert program.path.is_file() and program.max_abs_diff < 1e-5
    refused = run_cli("export", str(iris_run), "--format", "onnx", "--set", "width=3")
    assert refused.returncode == 2 and "give no --set" in refused.stderr


def test_a_checkpoint_that_does_not_fit_the_spec_points_to_the_runs_spec(iris_run: Path, write_spec):
    other = write_spec(IRIS_OTHER, name="mine.yaml")
    result = run_cli("export", str(other), "--format", "onnx", "--checkpoint", str(iris_run / "best.pt"))
    assert result.returncode == 2
    assert (
        f"The checkpoint was trained with {iris_run / 'spec.yaml'}; export the run folder: netspec export {iris_run}"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_export_of_a_folder_without_checkpoints_exits_2(tmp_path: Path):
    result = run_cli("export", str(tmp_path), "--format", "onnx")
    assert result.returncode == 2 and "a folder without best.pt or last.pt" in result.stderr


IRIS_OTHER = """\
name: iris_mlp
input: [4]
layers:
  - linear: {out_features: 8}
  - relu
  - linear: {out_features: 3}
"""
