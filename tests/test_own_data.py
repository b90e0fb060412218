"""Your own data: image folders and CSV tables, validation splits, fitting checks, fine-tuning, predict and eval."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from netspec.config import TrainConfig
from netspec.data import open_data
from netspec.data.folders import cache_dir
from netspec.errors import BadDataError, UsageError
from netspec.fileio import load_checkpoint
from netspec.train import train
from tests.conftest import SHARED_DATA, SPECS, requires_mnist, run_cli

QUIET = {"report": lambda line: None, "progress": False}

IRIS_MLP = """\
name: iris_mlp
input: [4]
layers:
  - linear: {out_features: 16}
  - relu
  - linear: {out_features: 3}
train: {epochs: 40, batch_size: 16, optimizer: adam, lr: 0.02, val_split: 0.2, test_split: 0.2}
"""

TINY_CNN = """\
name: tiny_cnn
input: [{channels}, 12, 12]
layers:
  - conv2d: {{out_channels: 4, kernel_size: 3}}
  - relu
  - flatten
  - linear: {{out_features: {classes}}}
train: {{epochs: 1, batch_size: 8}}
"""


def iris_csv(path: Path, scramble_test: bool = False, split_column: bool = False) -> Path:
    """scikit-learn's iris table (150 real rows, string labels) as a user's CSV file."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    gen = torch.Generator().manual_seed(7)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*names, "species", *(["split"] if split_column else [])])
        for i, (row, target) in enumerate(zip(iris.data, iris.target, strict=True)):
            split = ("train", "train", "val", "test", "train")[i % 5]
            label = iris.target_names[target]
            if scramble_test and split == "test":
                label = iris.target_names[int(torch.randint(0, 3, (1,), generator=gen))]
            writer.writerow([*row, label, *([split] if split_column else [])])
    return path


def mnist_pngs(root: Path, per_class: int, test_per_class: int = 0, layout: str = "splits") -> Path:
    """Real MNIST digits written as PNG files in class folders (a user's layout)."""
    from torchvision.datasets import MNIST

    for train_part, count, split in ((True, per_class, "train"), (False, test_per_class, "test")):
        if not count:
            continue
        ds = MNIST(str(SHARED_DATA), train=train_part)
        taken = {d: 0 for d in range(10)}
        for image, label in zip(ds.data, ds.targets.tolist(), strict=True):
            if taken[label] >= count:
                continue
            folder = root / (split if layout == "splits" else "") / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            Image.fromarray(image.numpy()).save(folder / f"{split}_{label}_{taken[label]:05d}.png")
            taken[label] += 1
            if all(v >= count for v in taken.values()):
                break
    return root


def files_under(path: Path) -> list[Path]:
    return sorted(p.relative_to(path) for p in path.rglob("*"))


# --- image folders ---------------------------------------------------------------------------------


@requires_mnist
def test_mnist_as_png_folders_trains_to_96_percent(tmp_path: Path):
    """The issue's check: real MNIST as PNGs in train/ and test/ class folders, mnist_cnn, one epoch."""
    data = mnist_pngs(tmp_path / "mnist_png", per_class=10**6, test_per_class=10**6)  # all 60,000 + 3,000
    result = run_cli(
        "train", str(SPECS / "mnist_cnn.yaml"), "--data", str(data), "--epochs", "1", "--lr", "0.05",
        "--out", str(tmp_path / "run"), "--json", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["test_accuracy"] >= 0.96
    assert out["val_accuracy"] is not None and out["classes"] == [str(d) for d in range(10)]
    assert "54,001 train, 5,999 val, 3,000 test examples" in result.stderr  # val: 10% of each class
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["classes"] == [str(d) for d in range(10)]
    assert len(ckpt["normalization"]["mean"]) == 1 and 0.1 < ckpt["normalization"]["mean"][0] < 0.15


@requires_mnist
def test_folder_is_decoded_once_and_cached_until_a_file_changes(tmp_path: Path, monkeypatch):
    from netspec.data import folders

    data = mnist_pngs(tmp_path / "digits", per_class=5, layout="classes")
    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
    calls = []
    real = folders.decode_images
    monkeypatch.setattr(folders, "decode_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = TrainConfig(data=str(data))
    first = open_data(cfg, (1, 28, 28))
    second = open_data(cfg, (1, 28, 28))
    assert len(calls) == 1  # the second read came from the cache
    assert torch.equal(first.train.inputs, second.train.inputs)
    assert list(cache_dir().glob("folders/*.pt"))
    changed = next((data / "3").iterdir())
    changed.write_bytes((data / "4" / next((data / "4").iterdir()).name).read_bytes())
    open_data(cfg, (1, 28, 28))
    assert len(calls) == 2  # a changed file is decoded anew


@requires_mnist
def test_class_folders_only_get_a_stratified_seeded_split_that_resume_and_eval_reuse(tmp_path: Path, write_spec):
    data = mnist_pngs(tmp_path / "digits", per_class=20, layout="classes")
    spec = write_spec(TINY_CNN.format(channels=1, classes=10).replace("12, 12", "28, 28"))
    result = train(spec, {"data": str(data), "epochs": 1}, out=tmp_path / "run", **QUIET)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert [len(split[k]) for k in ("train", "val", "test")] == [160, 20, 20]  # 80/10/10, 2 of each class
    labels = open_data(TrainConfig(data=str(data)), (1, 28, 28)).test.labels
    assert sorted(labels.tolist()) == sorted(list(range(10)) * 2)  # stratified
    assert result.best_epoch == 1
    # --resume --epochs 2 extends the finished run on the same split.
    extended = train(resume=tmp_path / "run", overrides={"epochs": 2}, **QUIET)
    assert [m.epoch for m in extended.epochs] == [1, 2]
    assert json.loads((tmp_path / "run" / "split.json").read_text()) == split
    evaluated = run_cli("eval", str(tmp_path / "run"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert (
        json.loads(evaluated.stdout)["test_accuracy"]
        == pytest.approx(json.loads((tmp_path / "run" / "metrics.json").read_text())[-1]["test_accuracy"])
        or load_checkpoint(tmp_path / "run" / "best.pt")["selection"]["best_epoch"] != 2
    )


def test_folder_errors_name_the_file_or_folder(tmp_path: Path, write_spec):
    from PIL import Image

    spec = write_spec(TINY_CNN.format(channels=3, classes=2))
    root = tmp_path / "pics"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (20, 16), (i * 40, 10, 200 if cls == "cat" else 20)).save(root / cls / f"{i}.jpg")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    before = files_under(tmp_path)
    result = run_cli("train", str(spec), "--data", str(root), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert (
        f"{root / 'dog' / 'broken.png'}: not a readable image" in result.stderr and "--skip-bad-files" in result.stderr
    )
    assert "Traceback" not in result.stderr and files_under(tmp_path) == before

    skipped = run_cli("train", str(spec), "--data", str(root), "--out", str(tmp_path / "run"), "--skip-bad-files",
                      "--no-progress")  # fmt: skip
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped 1 unreadable image(s)" in skipped.stdout and "dog/broken.png" in skipped.stdout

    (root / "bird").mkdir()
    empty = run_cli("train", str(spec), "--data", str(root), "--out", str(tmp_path / "run2"))
    assert empty.returncode == 2 and f"{root / 'bird'}: an empty class folder" in empty.stderr

    split_root = tmp_path / "split"
    for split, classes in (("train", ("cat", "dog")), ("val", ("cat",))):
        for cls in classes:
            (split_root / split / cls).mkdir(parents=True)
            Image.new("RGB", (12, 12)).save(split_root / split / cls / "a.png")
    mismatch = run_cli("train", str(spec), "--data", str(split_root), "--out", str(tmp_path / "run3"))
    assert mismatch.returncode == 2
    assert f"{split_root / 'val'}: its classes differ from {split_root / 'train'}'s (missing dog)" in mismatch.stderr


# --- tables --------------------------------------------------------------------------------------


def test_csv_table_trains_and_predict_prints_class_names(tmp_path: Path, write_spec):
    table = iris_csv(tmp_path / "iris.csv")
    spec = write_spec(IRIS_MLP)
    result = run_cli("train", str(spec), "--data", str(table), "--out", str(tmp_path / "run"), "--json",
                     "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["classes"] == ["setosa", "versicolor", "virginica"]
    assert out["test_accuracy"] >= 0.85 and out["val_accuracy"] >= 0.85
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["kind"] == "table" and data["features"][0] == "sepal_length" and len(data["mean"]) == 4

    rows = tmp_path / "new.csv"
    rows.write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    predicted = run_cli("predict", str(tmp_path / "run"), str(rows), "--json")
    assert predicted.returncode == 0, predicted.stderr
    got = json.loads(predicted.stdout)
    assert [p["class"] for p in got] == ["setosa", "virginica"]
    assert got[0]["input"] == "new.csv:2" and 0 < got[0]["probability"] <= 1 and len(got[0]["top"]) == 3
    table_out = run_cli("predict", str(tmp_path / "run"), str(rows))
    assert "setosa" in table_out.stdout and "virginica" in table_out.stdout


@pytest.mark.parametrize(
    ("edit", "args", "message"),
    [
        (
            lambda t: t.replace("5.1,3.5,1.4", "5.1,abc,1.4", 1),
            [],
            "iris.csv:2: column 'sepal_width': 'abc' is not a number",
        ),
        (lambda t: t, ["--label", "specis"], "no column 'specis' (did you mean 'species'?)"),
        (
            lambda t: t.replace("sepal_width,", "", 1).replace(",3.5,", ",", 1),
            [],
            "iris.csv:3: 5 cells, but the header names 4 columns",
        ),
        (
            lambda t: "\n".join(
                ",".join(c for i, c in enumerate(line.split(",")) if i != 1) for line in t.splitlines()
            ),
            [],
            "the network takes input 4 but",
        ),
    ],
    ids=["bad-cell", "missing-label-column", "short-row", "feature-count"],
)
def test_table_errors_are_one_located_line_and_exit_2(tmp_path: Path, write_spec, edit, args, message):
    table = iris_csv(tmp_path / "iris.csv")
    table.write_text(edit(table.read_text()))
    spec = write_spec(IRIS_MLP)
    before = files_under(tmp_path)
    result = run_cli("train", str(spec), "--data", str(table), "--out", str(tmp_path / "run"), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    assert "Traceback" not in result.stderr and files_under(tmp_path) == before
    if "feature-count" in message or "takes input" in message:
        assert "3 feature columns (set input: [3])" in result.stderr


def test_split_column_is_honoured(tmp_path: Path):
    table = iris_csv(tmp_path / "iris.csv", split_column=True)
    data = open_data(TrainConfig(data=str(table)), (4,))
    assert (len(data.train), len(data.val), len(data.test)) == (90, 30, 30)


# --- the spec must fit the data -------------------------------------------------------------------


@requires_mnist
def test_a_spec_that_does_not_fit_its_data_exits_2_before_any_file(tmp_path: Path, write_spec):
    text = (SPECS / "mlp.yaml").read_text().replace("out_features: 10", "out_features: 5")
    spec = write_spec(text, "five_outputs.yaml")
    before = files_under(tmp_path)
    result = run_cli("train", str(spec), "--dataset", "mnist", "--data-root", str(SHARED_DATA),
                     "--out", str(tmp_path / "run"))  # fmt: skip
    assert result.returncode == 2
    assert (
        f"{spec}: the network outputs 5 values but mnist has 10 classes (set the last linear's out_features to 10)"
        in result.stderr
    )
    unet = run_cli("train", str(SPECS / "unet_small.yaml"), "--dataset", "synthetic", "--out", str(tmp_path / "u"))
    assert unet.returncode == 2 and "netspec train trains classifiers" in unet.stderr
    sweep = run_cli("sweep", str(spec), "--grid", "lr=0.1,0.01", "--dataset", "mnist", "--data-root",
                    str(SHARED_DATA), "--out", str(tmp_path / "sweep"))  # fmt: skip
    assert sweep.returncode == 2 and "has 10 classes" in sweep.stderr
    assert files_under(tmp_path) == before


def test_augment_is_refused_for_tables(tmp_path: Path, write_spec):
    table = iris_csv(tmp_path / "iris.csv")
    spec = write_spec(IRIS_MLP.replace("val_split: 0.2", "val_split: 0.2, augment: true"))
    with pytest.raises(UsageError, match="augment: crop, flip and cutout apply to images"):
        train(spec, {"data": str(table)}, out=tmp_path / "run", **QUIET)


# --- honest evaluation ---------------------------------------------------------------------------


def test_the_test_split_never_influences_a_choice(tmp_path: Path, write_spec):
    """Scrambling the test labels changes the test accuracies and nothing else: not best.pt, not early stopping,
    not the sweep's best trial or its pruning."""
    spec = write_spec(IRIS_MLP.replace("epochs: 40", "epochs: 12").replace("lr: 0.02", "lr: 0.05"))
    runs = {}
    for name, scramble in (("true", False), ("scrambled", True)):
        table = iris_csv(tmp_path / f"{name}.csv", scramble_test=scramble, split_column=True)
        runs[name] = train(spec, {"data": str(table), "patience": 3, "monitor": "val_accuracy"},
                           out=tmp_path / name, **QUIET)  # fmt: skip
    a, b = runs["true"], runs["scrambled"]
    assert [m.test_accuracy for m in a.epochs] != [m.test_accuracy for m in b.epochs]
    assert [m.val_accuracy for m in a.epochs] == [m.val_accuracy for m in b.epochs]
    assert (a.best_epoch, a.stopped_early, len(a.epochs)) == (b.best_epoch, b.stopped_early, len(b.epochs))
    best_a = load_checkpoint(tmp_path / "true" / "best.pt")["model"]
    best_b = load_checkpoint(tmp_path / "scrambled" / "best.pt")["model"]
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    assert a.best.val_accuracy == max(m.val_accuracy for m in a.epochs)

    sweeps = {}
    for name in ("true", "scrambled"):
        result = run_cli("sweep", str(spec), "--grid", "lr=0.3,0.05,0.001", "--data", str(tmp_path / f"{name}.csv"),
                         "--out", str(tmp_path / f"sweep-{name}"), "--json")  # fmt: skip
        assert result.returncode == 0, result.stderr
        sweeps[name] = json.loads(result.stdout)
    pick = {name: (s["best"]["number"], [(t["number"], t["state"]) for t in s["trials"]]) for name, s in sweeps.items()}
    assert pick["true"] == pick["scrambled"]
    assert sweeps["true"]["best"]["val_accuracy"] == max(t["val_accuracy"] for t in sweeps["true"]["trials"]
                                                         if t["state"] == "complete")  # fmt: skip


def test_val_split_0_keeps_selection_on_test_and_says_so(tmp_path: Path, write_spec):
    table = iris_csv(tmp_path / "iris.csv")
    spec = write_spec(IRIS_MLP.replace("epochs: 40", "epochs: 2"))
    lines: list[str] = []
    result = train(spec, {"data": str(table), "val_split": 0.0}, out=tmp_path / "run", report=lines.append,
                   progress=False)  # fmt: skip
    assert result.selected_on == "test_accuracy" and result.last.val_accuracy is None
    assert "best.pt is chosen on TEST accuracy" in lines[0]
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,lr")
    assert rows[1].split(",")[3:5] == ["", ""]  # not measured: empty, never stale


def test_early_stopping_stops_after_patience_epochs(tmp_path: Path, write_spec):
    table = iris_csv(tmp_path / "iris.csv")
    spec = write_spec(IRIS_MLP.replace("lr: 0.02", "lr: 0.000001").replace("epochs: 40", "epochs: 30"))
    result = train(spec, {"data": str(table), "patience": 2, "monitor": "val_accuracy"}, out=tmp_path / "r", **QUIET)
    assert result.stopped_early and len(result.epochs) < 30
    accs = [m.val_accuracy for m in result.epochs]
    assert all(a <= accs[result.best_epoch - 1] for a in accs[result.best_epoch :])


# --- augmentation --------------------------------------------------------------------------------


def test_augmentation_changes_training_batches_and_not_evaluation():
    from netspec.config import Augment
    from netspec.data import DataInfo, DeviceLoader, Examples

    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    data = Examples(images, torch.zeros(16, dtype=torch.long))
    info = DataInfo("x", "image", (3, 8, 8), ("a",), (0.5,) * 3, (0.25,) * 3)
    plain = next(DeviceLoader(data, info, 16, torch.device("cpu")).batches())[0]
    spec_aug = Augment.model_validate({"crop": {"padding": 2}, "flip": True, "cutout": 3})
    augmented = next(DeviceLoader(data, info, 16, torch.device("cpu"), augment=spec_aug).batches())[0]
    assert not torch.equal(plain, augmented)
    assert ((augmented == 0).flatten(1).sum(1) >= 9).all()  # each image has its 3×3 cutout (×3 channels)
    again = next(DeviceLoader(data, info, 16, torch.device("cpu"), augment=spec_aug).batches())[0]
    assert torch.equal(augmented, again)  # seeded: a resumed run sees the same batches
    assert Augment.of(True) == Augment.model_validate({"crop": {"padding": 4}, "flip": True})


# --- fine-tuning ---------------------------------------------------------------------------------


@requires_mnist
def test_fine_tune_from_a_torchvision_state_dict_with_a_new_head(tmp_path: Path, write_spec):
    import torchvision
    from PIL import Image

    reference = torchvision.models.shufflenet_v2_x1_0(weights=None)
    torch.save(reference.state_dict(), tmp_path / "shufflenet.pth")
    text = (SPECS / "shufflenet_v2_x1_0.yaml").read_text()
    spec = write_spec(text.replace("out_features: 1000", "out_features: 3").replace("[3, 224, 224]", "[3, 64, 64]"))
    mnist = mnist_pngs(tmp_path / "gray", per_class=8, layout="classes")
    root = tmp_path / "rgb"
    for digit in ("0", "1", "2"):  # three classes as RGB images
        (root / digit).mkdir(parents=True)
        for f in (mnist / digit).iterdir():
            Image.open(f).convert("RGB").save(root / digit / f.name)
    model_names = [n for n, _ in __import__("netspec").build(spec).named_parameters()]
    head = model_names[-1].split(".")[0]
    frozen = sorted({n.split(".")[0] for n in model_names} - {head})
    result = run_cli(
        "train", str(spec), "--data", str(root), "--init-from", str(tmp_path / "shufflenet.pth"), "--skip-mismatched",
        *[a for name in frozen for a in ("--freeze", name)], "--epochs", "1", "--batch-size", "8",
        "--out", str(tmp_path / "run"), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "loaded 336 of 338 tensors; skipped 2 that do not fit: fc.weight, fc.bias" in result.stdout
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    source = list(reference.state_dict().values())
    weights = [k for k in trained if k.endswith("weight") and not k.startswith(head)]
    positions = {k: i for i, k in enumerate(trained)}
    assert all(torch.equal(trained[k], source[positions[k]]) for k in weights)  # frozen: exactly torchvision's
    without_skip = run_cli("train", str(spec), "--data", str(root), "--init-from", str(tmp_path / "shufflenet.pth"),
                           "--out", str(tmp_path / "run2"))  # fmt: skip
    assert (
        without_skip.returncode == 2
        and "do not fit" in without_skip.stderr
        and "--skip-mismatched" in without_skip.stderr
    )
    assert not (tmp_path / "run2").exists()


def test_resume_extends_a_finished_run(tmp_path: Path, write_spec):
    table = iris_csv(tmp_path / "iris.csv")
    spec = write_spec(IRIS_MLP.replace("epochs: 40", "epochs: 2"))
    train(spec, {"data": str(table)}, out=tmp_path / "run", **QUIET)
    result = run_cli("train", "--resume", str(tmp_path / "run"), "--epochs", "4", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "epoch 3/4" in result.stdout and "epoch 4/4" in result.stdout and "epoch 1/" not in result.stdout
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())) == 4
    again = run_cli("train", "--resume", str(tmp_path / "run"), "--lr", "0.1")
    assert again.returncode == 2 and "but --epochs N" in again.stderr


def test_bad_data_error_is_exit_2():
    assert BadDataError("x").exit_code == 2


def test_download_without_network_says_so_and_leaves_nothing(tmp_path: Path):
    """This machine (and CI) reaches no dataset host: the download fails, and says so."""
    result = run_cli("train", str(SPECS / "lenet.yaml"), "--download", "--data-root", str(tmp_path / "dl"),
                     "--out", str(tmp_path / "run"))  # fmt: skip
    assert result.returncode == 1
    assert "could not download fashion_mnist into" in result.stderr and "nothing was kept" in result.stderr
    assert "corrupted" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "dl").exists() and not (tmp_path / "run").exists()


def test_an_exported_model_classifies_raw_rows_as_predict_does(tmp_path: Path, write_spec):
    import numpy as np
    import onnxruntime

    table = iris_csv(tmp_path / "iris.csv")
    spec = write_spec(IRIS_MLP.replace("epochs: 40", "epochs: 10"))
    train(spec, {"data": str(table)}, out=tmp_path / "run", **QUIET)
    raw = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.4, 1.3]], dtype=np.float32)
    rows = tmp_path / "rows.csv"
    lines = [",".join(f"{v:g}" for v in row) for row in raw.tolist()]
    rows.write_text("\n".join(["sepal_length,sepal_width,petal_length,petal_width", *lines]) + "\n")
    exported = run_cli("export", str(spec), "--format", "onnx", "--checkpoint", str(tmp_path / "run" / "best.pt"),
                       "--out", str(tmp_path / "model.onnx"))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    logits = session.run(None, {session.get_inputs()[0].name: raw})[0]
    classes = json.loads(session.get_modelmeta().custom_metadata_map["netspec_classes"])
    predicted = json.loads(run_cli("predict", str(tmp_path / "run"), str(rows), "--json").stdout)
    assert [classes[i] for i in logits.argmax(1)] == [p["class"] for p in predicted]
