"""The built-in datasets (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-2, synthetic), read from torchvision's
layout into one uint8 tensor per split."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from netspec.data.base import DataInfo, Examples, Pool
from netspec.errors import DataError, MissingDataError

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# The usual published normalization of each dataset (the training set's mean and std per channel).
DATASET_INFO = {
    "mnist": DataInfo("mnist", "image", (1, 28, 28), MNIST_CLASSES, (0.1307,), (0.3081,)),
    "fashion_mnist": DataInfo("fashion_mnist", "image", (1, 28, 28), FASHION_CLASSES, (0.2860,), (0.3530,)),
    "cifar10": DataInfo("cifar10", "image", (3, 32, 32), CIFAR10_CLASSES, CIFAR_MEAN, CIFAR_STD),
    # "Deep Learning with PyTorch", chapter 7: airplanes (label 0) vs birds (label 2).
    "cifar2": DataInfo("cifar2", "image", (3, 32, 32), ("airplane", "bird"), CIFAR_MEAN, CIFAR_STD),
}


def dataset_info(name: str, input_shape: tuple[int, ...] | None = None) -> DataInfo:
    if name == "synthetic":
        shape = tuple(input_shape or (1, 28, 28))
        return DataInfo("synthetic", "image", shape, tuple(f"class {i}" for i in range(10)), (0.5,), (0.2887,))
    return DATASET_INFO[name]


def read_builtin(
    name: str, root: str | Path, download: bool, input_shape: tuple[int, ...] | None, synthetic_size: int
) -> Pool:
    """A built-in dataset's training and test splits as one pool (make_splits carves validation from train)."""
    train = load_split(name, root, True, download, input_shape, synthetic_size)
    test = load_split(name, root, False, download, input_shape, synthetic_size)
    given = torch.cat([torch.zeros(len(train), dtype=torch.int8), torch.full((len(test),), 2, dtype=torch.int8)])
    examples = Examples(torch.cat([train.inputs, test.inputs]), torch.cat([train.labels, test.labels]))
    return Pool(examples, dataset_info(name, input_shape).classes, given)


def load_split(
    name: str,
    root: str | Path,
    train: bool,
    download: bool = False,
    input_shape: tuple[int, ...] | None = None,
    synthetic_size: int = 4096,
) -> Examples:
    """Read one split of a dataset into memory (once per process: a sweep's trials share it)."""
    key = (name, str(Path(root).resolve()), train, tuple(input_shape or ()), synthetic_size, _stamp(root))
    if key not in _SPLITS:
        if len(_SPLITS) >= 4:
            _SPLITS.pop(next(iter(_SPLITS)))
        _SPLITS[key] = _read_split(name, root, train, download, input_shape, synthetic_size)
    return _SPLITS[key]


_SPLITS: dict[tuple[Any, ...], Examples] = {}


def _stamp(root: str | Path) -> tuple[tuple[str, int, int], ...]:
    """Size and mtime of the dataset files under `root`: a changed file is read again."""
    found = []
    for folder in ("MNIST/raw", "FashionMNIST/raw", "cifar-10-batches-py"):
        path = Path(root) / folder
        if path.is_dir():
            found += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(path.iterdir()) if f.is_file()]
    return tuple(found)


def _read_split(
    name: str, root: str | Path, train: bool, download: bool, input_shape: tuple[int, ...] | None, synthetic_size: int
) -> Examples:
    root = Path(root)
    if name == "synthetic":
        return _synthetic(tuple(input_shape or (1, 28, 28)), synthetic_size if train else max(synthetic_size // 4, 1))
    if name in ("mnist", "fashion_mnist"):
        return _mnist_like(name, root, train, download)
    if name in ("cifar10", "cifar2"):
        data = _cifar10(root, train, download)
        if name == "cifar2":
            keep = (data.labels == 0) | (data.labels == 2)
            data = Examples(data.images[keep], (data.labels[keep] == 2).long())
        return data
    raise DataError(f"unknown dataset '{name}'")


def _mnist_like(name: str, root: Path, train: bool, download: bool) -> Examples:
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    folder = root / cls.__name__ / "raw"
    prefix = "train" if train else "t10k"
    expected = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    present = all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in expected)
    if not present and not download:
        raise MissingDataError(_missing(name, folder, expected))
    if not present:
        _download(name, root, lambda: cls(str(root), train=train, download=True))
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError as exc:
        if "not found" in str(exc).lower():
            raise MissingDataError(f"{_missing(name, folder, expected)} ({exc})") from None
        raise DataError(f"cannot read {name} under {folder}: the files are corrupted ({exc})") from None
    except (OSError, ValueError, IndexError, TypeError) as exc:  # truncated or garbled idx files
        raise DataError(f"cannot read {name} under {folder}: the files are corrupted ({exc})") from None
    return Examples(ds.data.unsqueeze(1).contiguous(), ds.targets.long())


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles: allow numpy arrays and nothing else."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar10(root: Path, train: bool, download: bool) -> Examples:
    folder = root / "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    if download and not all((folder / f).exists() for f in files):
        from torchvision import datasets

        _download("cifar10", root, lambda: datasets.CIFAR10(str(root), train=train, download=True))
    if not all((folder / f).exists() for f in files):
        raise MissingDataError(_missing("cifar10", folder, files))
    images, labels = [], []
    for f in files:
        try:
            with open(folder / f, "rb") as fh:
                batch = _ArrayUnpickler(fh, encoding="latin1").load()
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(batch.get("labels", batch.get("fine_labels", [])))
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{folder / f}: not a CIFAR-10 batch file ({exc})") from None
    return Examples(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long))


def _download(name: str, root: Path, fetch: Callable[[], object]) -> None:
    """Run torchvision's download; on failure remove every file and folder it made, and say it failed."""
    import shutil

    before = {p for p in root.rglob("*")} if root.exists() else set()
    root_existed = root.exists()
    import contextlib
    import io

    said = io.StringIO()  # torchvision prints each mirror it tries, and why it failed
    try:
        with contextlib.redirect_stdout(said):
            fetch()
    except Exception as exc:  # no network, a refused connection, a full disk, a bad checksum
        made = sorted((p for p in root.rglob("*") if p not in before), key=lambda p: len(p.parts), reverse=True)
        for path in made:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if not root_existed:
            shutil.rmtree(root, ignore_errors=True)
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        tried = [line for line in said.getvalue().splitlines() if "Failed to download" in line]
        if tried:
            reason += "; " + tried[0].split(":", 1)[-1].strip()
        offline = any(w in reason.lower() for w in ("name or service", "temporary failure", "network", "resolve",
                                                     "connection", "urlopen", "timed out"))  # fmt: skip
        why = "no network connection" if offline else "the download failed"
        raise DataError(
            f"could not download {name} into {root}: {why} ({reason}); nothing was kept. Copy the files into "
            f"{root} in torchvision's layout, or try again on a machine with internet access"
        ) from None


def _missing(name: str, folder: Path, files: list[str]) -> str:
    return (
        f"dataset {name} not found: expected {', '.join(files)} in {folder}. "
        f"Point --data-root at the folder that holds it in torchvision's layout, "
        f"or pass --download on a machine with internet access"
    )


def _synthetic(shape: tuple[int, ...], n: int) -> Examples:
    """Random images labelled by a fixed random linear teacher: learnable, no files needed."""
    gen = torch.Generator().manual_seed(1234)
    teacher = torch.randn(math.prod(shape), 10, generator=gen)
    # Draw the test split from the same stream after the train split, so they differ.
    images = torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)
    logits = (images.flatten(1).float() / 255 - 0.5) @ teacher
    return Examples(images, logits.argmax(1))
