"""Small dataset files in torchvision's on-disk layouts, made by the tests themselves."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx_mnist(root: Path, folder: str, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """MNIST-format idx files under root/<folder>/raw (folder: MNIST or FashionMNIST)."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):  # a bright bar whose row encodes the label: learnable
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


def write_cifar10(root: Path, per_batch: int = 50, seed: int = 0) -> Path:
    """cifar-10-batches-py with five small training batches and a test batch."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data}, f)
    return root


def mnist_digits(per_class: int, classes: tuple[int, ...] = (0, 1, 2)) -> list[tuple[np.ndarray, int]]:
    """Real MNIST test digits (28×28 uint8 arrays) with their labels, `per_class` of each class, in file order."""
    from torchvision.datasets import MNIST

    from tests.conftest import SHARED_DATA

    ds = MNIST(str(SHARED_DATA), train=False)
    taken = {c: 0 for c in classes}
    out = []
    for image, label in zip(ds.data, ds.targets.tolist(), strict=True):
        if label in taken and taken[label] < per_class:
            out.append((image.numpy(), label))
            taken[label] += 1
    return out


def write_digit_folder(root: Path, per_class: int, size: int = 28, rgb: bool = False, suffix: str = ".png") -> Path:
    """Real MNIST digits as image files in class folders root/<digit>/ (optionally RGB and resized)."""
    from PIL import Image

    for i, (array, label) in enumerate(mnist_digits(per_class)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(array)
        if size != 28:
            image = image.resize((size, size))
        if rgb:
            image = image.convert("RGB")
        image.save(folder / f"{i:04d}{suffix}")
    return root
