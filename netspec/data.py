"""Datasets as uint8 tensors on the training device, batched there.

For small images the per-sample PIL/ToTensor work of a DataLoader dominates the
epoch. Here a dataset is read once into one uint8 tensor, moved to the device, and
each epoch is shuffled, sliced into batches, normalized and (for CIFAR) augmented
there, in whole batches.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from netspec.errors import DataError

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


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    sample_shape: tuple[int, ...]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASET_INFO = {
    "mnist": DatasetInfo("mnist", (1, 28, 28), MNIST_CLASSES, (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetInfo("fashion_mnist", (1, 28, 28), FASHION_CLASSES, (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), CIFAR10_CLASSES, CIFAR_MEAN, CIFAR_STD),
    # "Deep Learning with PyTorch", chapter 7: airplanes (label 0) vs birds (label 2).
    "cifar2": DatasetInfo("cifar2", (3, 32, 32), ("airplane", "bird"), CIFAR_MEAN, CIFAR_STD),
}


@dataclass
class ImageData:
    """A whole split: images uint8 (N, *sample_shape) and labels int64 (N)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def dataset_info(name: str, input_shape: tuple[int, ...] | None = None) -> DatasetInfo:
    if name == "synthetic":
        shape = tuple(input_shape or (1, 28, 28))
        return DatasetInfo("synthetic", shape, tuple(f"class {i}" for i in range(10)), (0.5,), (0.2887,))
    return DATASET_INFO[name]


def load_split(
    name: str,
    root: str | Path,
    train: bool,
    download: bool = False,
    input_shape: tuple[int, ...] | None = None,
    synthetic_size: int = 4096,
) -> ImageData:
    """Read one split of a dataset into memory (once per process: a sweep's trials share it)."""
    key = (name, str(Path(root).resolve()), train, tuple(input_shape or ()), synthetic_size, _stamp(root))
    if key not in _SPLITS:
        if len(_SPLITS) >= 4:
            _SPLITS.pop(next(iter(_SPLITS)))
        _SPLITS[key] = _read_split(name, root, train, download, input_shape, synthetic_size)
    return _SPLITS[key]


_SPLITS: dict[tuple[Any, ...], ImageData] = {}


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
) -> ImageData:
    root = Path(root)
    if name == "synthetic":
        return _synthetic(tuple(input_shape or (1, 28, 28)), synthetic_size if train else max(synthetic_size // 4, 1))
    if name in ("mnist", "fashion_mnist"):
        return _mnist_like(name, root, train, download)
    if name in ("cifar10", "cifar2"):
        data = _cifar10(root, train, download)
        if name == "cifar2":
            keep = (data.labels == 0) | (data.labels == 2)
            data = ImageData(data.images[keep], (data.labels[keep] == 2).long())
        return data
    raise DataError(f"unknown dataset '{name}'")


def _mnist_like(name: str, root: Path, train: bool, download: bool) -> ImageData:
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    folder = root / cls.__name__ / "raw"
    prefix = "train" if train else "t10k"
    expected = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    if not download and not all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in expected):
        raise DataError(_missing(name, folder, expected))
    try:
        ds = cls(str(root), train=train, download=download)
    except RuntimeError as exc:
        if "not found" in str(exc).lower():
            raise DataError(f"{_missing(name, folder, expected)} ({exc})") from None
        raise DataError(f"cannot read {name} under {folder}: the files are corrupted ({exc})") from None
    except (OSError, ValueError, IndexError, TypeError) as exc:  # truncated or garbled idx files
        raise DataError(f"cannot read {name} under {folder}: the files are corrupted ({exc})") from None
    return ImageData(ds.data.unsqueeze(1).contiguous(), ds.targets.long())


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


def _cifar10(root: Path, train: bool, download: bool) -> ImageData:
    folder = root / "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    if download and not all((folder / f).exists() for f in files):
        from torchvision import datasets

        try:
            datasets.CIFAR10(str(root), train=train, download=True)
        except Exception as exc:  # no network, full disk, ...
            raise DataError(f"could not download CIFAR-10 into {root}: {exc}") from None
    if not all((folder / f).exists() for f in files):
        raise DataError(_missing("cifar10", folder, files))
    images, labels = [], []
    for f in files:
        try:
            with open(folder / f, "rb") as fh:
                batch = _ArrayUnpickler(fh, encoding="latin1").load()
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(batch.get("labels", batch.get("fine_labels", [])))
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{folder / f}: not a CIFAR-10 batch file ({exc})") from None
    return ImageData(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long))


def _missing(name: str, folder: Path, files: list[str]) -> str:
    return (
        f"dataset {name} not found: expected {', '.join(files)} in {folder}. "
        f"Point --data-root at the folder that holds it in torchvision's layout, "
        f"or pass --download on a machine with internet access"
    )


def _synthetic(shape: tuple[int, ...], n: int) -> ImageData:
    """Random images labelled by a fixed random linear teacher: learnable, no files needed."""
    gen = torch.Generator().manual_seed(1234)
    teacher = torch.randn(math.prod(shape), 10, generator=gen)
    # Draw the test split from the same stream after the train split, so they differ.
    images = torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)
    logits = (images.flatten(1).float() / 255 - 0.5) @ teacher
    return ImageData(images, logits.argmax(1))


def _share(n: int, rank: int, world: int) -> slice:
    """Rank's contiguous share of n items (the first n % world ranks get one more)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class DeviceLoader:
    """Batches of one split, normalized (and augmented) on `device`.

    The order of epoch `e` depends only on (seed, e), so a run resumed mid-epoch
    sees exactly the batches it would have seen.
    """

    def __init__(
        self,
        data: ImageData,
        info: DatasetInfo,
        batch_size: int,
        device: torch.device,
        *,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        channels_last: bool = False,
        resize_to: tuple[int, ...] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        # (rank, world) of a distributed run: the test split is cut into one contiguous share per rank;
        # the training split keeps the whole epoch order and each rank takes its share of every batch.
        self.rank, self.world = shard
        if self.world > 1 and not shuffle:
            part = _share(len(data.labels), self.rank, self.world)
            data = ImageData(data.images[part], data.labels[part])
        self.images = data.images.to(device)
        self.resize_to = resize_to
        self.labels = data.labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.channels_last = channels_last and self.images.dim() == 4
        view = (-1, *([1] * (self.images.dim() - 2)))  # per channel, broadcast over the rest
        std = torch.tensor(info.std, device=device).view(view)
        mean = torch.tensor(info.mean, device=device).view(view)
        self.scale = 1.0 / (255.0 * std)  # x/255 normalized in one multiply-add
        self.shift = -mean / std

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def _epoch_seed(self, epoch: int) -> int:
        return self.seed * 1_000_003 + epoch

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.labels), device=self.device)
        gen = torch.Generator().manual_seed(self._epoch_seed(epoch))
        return torch.randperm(len(self.labels), generator=gen).to(self.device)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of `epoch`, beginning with batch number `start`."""
        order = self.order(epoch)
        for b in range(start, len(self)):
            yield self._batch(order[b * self.batch_size : (b + 1) * self.batch_size], epoch, b)

    def shard_batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """This rank's share of each global batch of `epoch`, with the weight that turns the share's summed
        loss into its part of the global batch's mean (world / global size; 0 for a stand-in example when
        a short last batch leaves this rank nothing, so that every rank still takes part in the step)."""
        order = self.order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            mine = idx[_share(len(idx), self.rank, self.world)]
            if len(mine):
                yield (*self._batch(mine, epoch, b), self.world / len(idx))
            else:
                yield (*self._batch(idx[:1], epoch, b), 0.0)

    def _batch(self, idx: torch.Tensor, epoch: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.addcmul(self.shift, self.images[idx].float(), self.scale)
        if self.augment:
            x = self._augment(x, epoch, b)
        if self.resize_to is not None:  # per batch: a resized dataset would not fit in memory
            x = torch.nn.functional.interpolate(x, size=self.resize_to, mode="bilinear", align_corners=False)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches()

    def _augment(self, x: torch.Tensor, epoch: int, batch: int, pad: int = 4) -> torch.Tensor:
        """Random crop (zero padding 4) and horizontal flip of a whole batch."""
        n, c, h, w = x.shape
        gen = torch.Generator().manual_seed(self._epoch_seed(epoch) * 100_003 + batch)
        dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=gen)).to(x.device)
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = dx[:, None] + torch.arange(w, device=x.device)
        cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
        batch_idx = torch.arange(n, device=x.device)[:, None, None, None]
        chan_idx = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch_idx, chan_idx, rows, cols]
