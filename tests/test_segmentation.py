"""Segmentation: folders of images and masks (netspec/data/segmentation.py), augmentation of image and mask
together, and (with real MNIST) training a U-Net with --task segmentation end to end."""

from __future__ import annotations

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
