"""Segmentation: folders of images and masks (netspec/data/segmentation.py), augmentation of image and mask
together, and (with real MNIST) training a U-Net with --task segmentation end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netspec.config import Augment, Crop
from netspec.data.base import DataInfo, Examples
from netspec.data.loader import DeviceLoader
from netspec.data.segmentation import IGNORED, is_segmentation_folder, read_mask, read_segmentation_folder
from netspec.errors import BadDataError
from tests.conftest import HAS_MNIST, ROOT, SHARED_DATA, requires_mnist, run_cli

# The end-to-end run: MNIST digits written as a segmentation folder, trained briefly on the CPU.
# Three digits (0, 1, 2), so that a few epochs on a CPU tell them apart: 4 classes with the background.
TRAIN_DIGITS = (0, 1, 2)
TRAIN_COUNT = 1200
TRAIN_ARGS = ("--set", "classes=4", "--epochs", "2", "--no-progress")
VOC_COLOURS = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [224, 224, 192] * 252  # 255: VOC's border colour


def write_pair(folder: Path, name: str, mask: np.ndarray, image_size: tuple[int, int] | None = None) -> None:
    """folder/images/NAME.png (a gray image whose brightness follows the mask) and folder/masks/NAME.png (a
    palette PNG, as VOC writes them)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    h, w = image_size or mask.shape
    image = Image.fromarray((np.clip(mask, 0, 4) * 60).astype(np.uint8), "L").resize((w, h), Image.NEAREST)
    image.save(folder / "images" / f"{name}.png")
    indexed = Image.fromarray(mask.astype(np.uint8), "P")
    indexed.putpalette(VOC_COLOURS)
    indexed.save(folder / "masks" / f"{name}.png")


def square_mask(size: int, cls: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), dtype=np.int64)
    top, left = rng.integers(0, size // 2, 2)
    mask[top : top + size // 2, left : left + size // 2] = cls
    return mask


def write_folder(root: Path, n: int = 12, size: int = 16, classes: int = 3) -> Path:
    for i in range(n):
        write_pair(root, f"{i:03d}", square_mask(size, 1 + i % (classes - 1), i))
    return root


def test_palette_masks_are_read_as_their_indices_not_their_colours(tmp_path: Path) -> None:
    mask = np.array([[0, 1], [2, 255]])
    write_pair(tmp_path, "a", mask)
    assert Image.open(tmp_path / "masks" / "a.png").mode == "P"
    assert read_mask(tmp_path / "masks" / "a.png").tolist() == [[0, 1], [2, 255]]


def test_a_folder_is_read_resized_with_nearest_masks_and_named_classes(tmp_path: Path) -> None:
    write_folder(tmp_path, n=6, size=16)
    (tmp_path / "classes.txt").write_text("background\ncat\n\ndog\n")
    pool = read_segmentation_folder(tmp_path, (1, 8, 8), cache=False)
    assert pool.classes == ("background", "cat", "dog")
    assert pool.examples.inputs.shape == (6, 1, 8, 8) and pool.examples.inputs.dtype == torch.uint8
    assert pool.examples.labels.shape == (6, 8, 8) and pool.examples.labels.dtype == torch.int64
    # nearest neighbour: only the classes the masks hold, never a blend of two
    assert set(pool.examples.labels.unique().tolist()) == {0, 1, 2}
    assert pool.ids[0] == str(Path("images") / "000.png")
    assert (pool.given == -1).all()


def test_without_classes_txt_the_classes_are_counted_from_the_masks(tmp_path: Path) -> None:
    write_folder(tmp_path, n=6, classes=4)
    pool = read_segmentation_folder(tmp_path, (1, 16, 16), cache=False)
    assert pool.classes == ("class 0", "class 1", "class 2", "class 3")


def test_train_val_test_folders_keep_their_split(tmp_path: Path) -> None:
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        write_folder(tmp_path / split, n=n)
    assert is_segmentation_folder(tmp_path)
    pool = read_segmentation_folder(tmp_path, (1, 16, 16), cache=False)
    assert pool.given.bincount().tolist() == [5, 2, 3]  # train, val, test


def test_ignore_index_marks_pixels_left_out(tmp_path: Path) -> None:
    mask = square_mask(16, 2, 0)
    mask[0, :] = 255
    write_pair(tmp_path, "a", mask)
    write_pair(tmp_path, "b", square_mask(16, 1, 1))
    pool = read_segmentation_folder(tmp_path, (1, 16, 16), ignore_index=255, cache=False)
    assert pool.classes == ("class 0", "class 1", "class 2")
    assert (pool.examples.labels[0, 0] == IGNORED).all() and (pool.examples.labels[0, 1:] >= 0).all()


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("image_without_mask", "images/002.png: this image has no mask"),
        ("mask_without_image", "masks/002.png: this mask has no image of the same name"),
        ("mask_size", "masks/002.png: the mask is 8×8 pixels but its image"),
        ("mask_value", "masks/002.png: the pixel at row 0, column 0 has the value 7, but"),
        ("colour_mask", "masks/002.png: a colour (RGB) mask"),
        ("no_masks_folder", "not a segmentation folder"),
    ],
)
def test_bad_folders_are_refused_naming_the_file(tmp_path: Path, damage: str, expected: str) -> None:
    write_folder(tmp_path, n=4)
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    if damage == "image_without_mask":
        (tmp_path / "masks" / "002.png").unlink()
    elif damage == "mask_without_image":
        (tmp_path / "images" / "002.png").unlink()
    elif damage == "mask_size":
        Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "masks" / "002.png")
    elif damage == "mask_value":
        Image.fromarray(np.full((16, 16), 7, np.uint8), "L").save(tmp_path / "masks" / "002.png")
    elif damage == "colour_mask":
        colours = np.zeros((16, 16, 3), np.uint8)
        colours[..., 0] = 200
        Image.fromarray(colours, "RGB").save(tmp_path / "masks" / "002.png")
    else:
        for f in (tmp_path / "masks").iterdir():
            f.unlink()
        (tmp_path / "masks").rmdir()
    with pytest.raises(BadDataError) as err:
        read_segmentation_folder(tmp_path, (1, 16, 16), cache=False)
    assert expected in str(err.value).replace(str(tmp_path) + "/", "")
    assert err.value.exit_code == 2


def test_augmentation_crops_and_flips_image_and_mask_together() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 255, (32, 1, 12, 12), generator=gen, dtype=torch.uint8)
    masks = images[:, 0].long()  # each pixel's class is its brightness: any misalignment shows
    info = DataInfo("x", "image", (1, 12, 12), ("a",), (0.0,), (1 / 255,))  # normalizing leaves x as it was
    augment = Augment(crop=Crop(padding=3), flip=True, cutout=4)
    loader = DeviceLoader(Examples(images, masks), info, 32, torch.device("cpu"), shuffle=True, augment=augment)
    x, y = next(loader.batches(0))
    assert y.shape == (32, 12, 12)
    padded = y == IGNORED
    assert padded.any() and (x[:, 0][padded] == 0).all()  # the crop's padding: no class known there
    shown = ~padded & (x[:, 0] != 0)  # (cutout zeroes the image only)
    assert torch.equal(x[:, 0][shown].round().long(), y[shown])
    assert (x[:, 0] == 0).sum() > padded.sum()  # cutout hid pixels whose class the mask still gives


# --- end to end, on real MNIST ------------------------------------------------------------------

UNET = ROOT / "examples" / "unet_mnist.yaml"


@pytest.fixture(scope="session")
def mnist_segmentation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real MNIST digits as a segmentation folder (examples/make_mnist_segmentation.py): 32×32 images of 0, 1 and
    2, masks of 4 classes (background, digit 0, digit 1, digit 2), written once per session."""
    if not HAS_MNIST:
        pytest.skip(f"real MNIST not found under {SHARED_DATA}")
    loaded = importlib.util.spec_from_file_location(
        "make_mnist_segmentation", ROOT / "examples" / "make_mnist_segmentation.py"
    )
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    folder = tmp_path_factory.mktemp("mnist_segmentation")
    module.write_folder(folder, TRAIN_COUNT, 32, SHARED_DATA, TRAIN_DIGITS)
    return folder


@pytest.fixture(scope="session")
def trained_unet(mnist_segmentation: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "unet"
    result = run_cli("train", str(UNET), "--data", str(mnist_segmentation), "--out", str(run), "--json", *TRAIN_ARGS)
    assert result.returncode == 0, result.stderr
    return run, json.loads(result.stdout)


@requires_mnist
def test_a_unet_learns_to_segment_mnist_digits(trained_unet: tuple[Path, dict]) -> None:
    run, result = trained_unet
    assert result["task"] == "segmentation"
    assert result["test_mean_iou"] >= 0.4, result
    assert result["test_pixel_accuracy"] >= 0.9
    assert result["selected_on"] == "val_loss"
    columns = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_mean_iou", "val_pixel_accuracy", "test_mean_iou"} <= set(columns)
    assert (run / "masks.png").stat().st_size > 0
    classes = result["details"]["classes"]
    assert list(classes) == ["background", "digit 0", "digit 1", "digit 2"]
    assert classes["background"]["iou"] > 0.9


@requires_mnist
def test_a_deeper_unet_segments_all_ten_mnist_digits(tmp_path: Path) -> None:
    """The issue's check with every digit: 6,000 MNIST digits, 11 classes, examples/unet_mnist_ten.yaml as the
    segmentation tutorial trains it (three epochs, about a minute on 2 cores)."""
    loaded = importlib.util.spec_from_file_location(
        "make_mnist_segmentation", ROOT / "examples" / "make_mnist_segmentation.py"
    )
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    module.write_folder(tmp_path / "digits", 6000, 32, SHARED_DATA)
    result = run_cli("train", str(ROOT / "examples" / "unet_mnist_ten.yaml"), "--data", str(tmp_path / "digits"),
                     "--out", str(tmp_path / "run"), "--json", "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert len(out["details"]["classes"]) == 11
    assert out["test_mean_iou"] >= 0.4, out


@requires_mnist
def test_predict_writes_a_mask_of_each_inputs_own_size(
    trained_unet: tuple[Path, dict], mnist_segmentation: Path, tmp_path: Path
) -> None:
    run, _ = trained_unet
    digit = Image.open(mnist_segmentation / "images" / "00001.png")  # MNIST's second training digit: a 0
    digit.resize((48, 40), Image.BILINEAR).save(tmp_path / "wide.png")
    out = tmp_path / "masks"
    result = run_cli("predict", str(run), str(tmp_path / "wide.png"), str(mnist_segmentation / "images" / "00003.png"),
                     "--out", str(out), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [Path(r["mask"]).name for r in rows] == ["wide.png", "00003.png"]
    wide = Image.open(out / "wide.png")
    assert wide.size == (48, 40) and wide.mode == "P"
    assert Image.open(out / "00003.png").size == (32, 32)
    coverage = rows[0]["coverage"]
    assert next(iter(coverage)) == "background" and abs(sum(coverage.values()) - 1) < 1e-3
    assert max((c for c in coverage if c != "background"), key=coverage.get) == "digit 0"


def test_a_segmentation_folder_without_the_task_is_refused_with_the_hint(tmp_path: Path) -> None:
    write_folder(tmp_path / "data", n=4)
    result = run_cli("train", "specs/lenet.yaml", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "holds images/ and masks/ folders" in result.stderr and "--task segmentation" in result.stderr
    assert not (tmp_path / "run").exists()


def test_an_output_that_does_not_fit_the_masks_is_refused_before_any_file(tmp_path: Path) -> None:
    for i in range(10):  # classes 1 to 10 in the masks, and the background: 11
        write_pair(tmp_path / "data", f"{i}", square_mask(32, i + 1, i))
    result = run_cli("train", str(UNET), "--data", str(tmp_path / "data"), "--set", "classes=5", "--out",
                     str(tmp_path / "run"))  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "the network outputs 5×32×32 but the masks have 11 classes" in result.stderr
    assert not (tmp_path / "run").exists()


def test_segmentation_needs_a_folder(tmp_path: Path) -> None:
    result = run_cli("train", str(UNET), "--dataset", "mnist", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "--task segmentation reads a folder of images/ and masks/" in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_metrics_count_pixels_and_leave_ignored_ones_out() -> None:
    from netspec.config import TrainConfig
    from netspec.tasks import TASKS, Meter

    task = TASKS["segmentation"]
    loss = task.loss_fn(TrainConfig(task="segmentation"), "sum", train=False)
    y = torch.tensor([[[0, 1], [1, IGNORED]]])
    out = torch.zeros(1, 3, 2, 2)
    out[0, 0] = torch.tensor([[5.0, 0.0], [5.0, 0.0]])  # predicted: [[0, 1], [0, 1]]
    out[0, 1] = torch.tensor([[0.0, 5.0], [0.0, 5.0]])
    meter = Meter(task, ["a", "b", "c"], loss, torch.device("cpu"))
    meter.update(out, y)
    result = meter.result()
    assert result.metrics["pixel_accuracy"] == pytest.approx(2 / 3)  # 3 pixels count, 2 right
    assert result.metrics["mean_iou"] == pytest.approx(0.5)  # a: 1/2, b: 1/2; c in neither: left out
    assert result.details["classes"]["c"]["iou"] is None
    changed = out.clone()
    changed[0, :, 1, 1] = torch.tensor([0.0, 0.0, 9.0])  # the ignored pixel's scores do not matter
    assert loss(changed, y).item() == pytest.approx(loss(out, y).item())


def test_a_segmentation_sweep_chooses_on_the_validation_mean_iou(tmp_path: Path) -> None:
    for i in range(40):  # squares whose brightness gives their class: learnable in an epoch
        write_pair(tmp_path / "data", f"{i:02d}", square_mask(32, 1 + i % 2, i))
    result = run_cli("sweep", str(UNET), "--grid", "lr=0.01,0.0001", "--data", str(tmp_path / "data"), "--set",
                     "classes=3", "--epochs", "1", "--monitor", "val_mean_iou", "--out", str(tmp_path / "sweep"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "sweep" / "results.json").read_text())
    best = results["best"]
    assert best["metric"] == "mean_iou" and not best["lower_is_better"]
    assert best["val_mean_iou"] == max(t["val_mean_iou"] for t in results["trials"])
    assert "chosen on validation mean iou" in result.stdout


def test_voc_borders_train_with_ignore_index_and_are_refused_without_it(tmp_path: Path) -> None:
    for i in range(12):
        mask = square_mask(32, 1 + i % 2, i)
        mask[0, :] = 255  # a border of pixels to leave out, as VOC marks object outlines
        write_pair(tmp_path / "data", f"{i:02d}", mask)
    (tmp_path / "data" / "classes.txt").write_text("background\nsmall\nlarge\n")
    args = ("train", str(UNET), "--data", str(tmp_path / "data"), "--set", "classes=3", "--epochs", "1")
    refused = run_cli(*args, "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2
    assert "has the value 255, but" in refused.stderr and "set ignore_index: 255" in refused.stderr
    assert not (tmp_path / "refused").exists()
    trained = run_cli(*args, "--ignore-index", "255", "--out", str(tmp_path / "run"), "--json", "--no-progress")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["task"] == "segmentation"
