"""Data sources, one interface: a built-in dataset, an image folder or a CSV table becomes `Data` (train, val
and test examples as tensors, and a `DataInfo` with the classes and the normalization), and `DeviceLoader`
batches a split on the training device.

- base.py: the types, the stratified seeded splits and the normalization statistics;
- builtin.py: MNIST, Fashion-MNIST, CIFAR-10/2 and synthetic data, in torchvision's layout;
- folders.py: image folders (torchvision's ImageFolder conventions), decoded once and cached;
- tables.py: CSV tables;
- loader.py: batches on the device, normalized and augmented there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from netspec.config import TrainConfig
from netspec.data.base import (
    SPLITS,
    Data,
    DataInfo,
    DatasetInfo,
    Examples,
    ImageData,
    Pool,
    channel_stats,
    make_splits,
)
from netspec.data.builtin import DATASET_INFO, dataset_info, load_split, read_builtin
from netspec.data.folders import decode_image, image_extensions
from netspec.data.loader import DeviceLoader
from netspec.data.tables import read_rows, read_table, table_columns
from netspec.errors import BadDataError, UsageError
from netspec.tasks import task_of

__all__ = [
    "DATASET_INFO",
    "SPLITS",
    "Data",
    "DataInfo",
    "DatasetInfo",
    "DeviceLoader",
    "Examples",
    "ImageData",
    "Pool",
    "dataset_info",
    "decode_image",
    "image_extensions",
    "load_split",
    "open_data",
    "read_rows",
    "source_name",
]


TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


def is_table(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TABLE_SUFFIXES or (Path(path).is_file() and file_kind(path) == "table")


def file_kind(path: str | Path) -> str:
    """What a path holds, by its name and first bytes: "folder", "image", "table" (text) or "other"."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    if not path.is_file():  # a FIFO, a device such as /dev/zero: never read
        return "other"
    if path.suffix.lower() in TABLE_SUFFIXES:
        return "table"
    if path.name.lower().endswith(image_extensions()):
        return "image"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return "other"
    if head.startswith(IMAGE_MAGIC):
        return "image"
    return "other" if b"\x00" in head else "table"


def check_data_path(path: str | Path, option: str = "--data") -> None:
    """`option`'s path exists and is a folder or a table: say what it takes otherwise (exit 2)."""
    path = Path(path)
    if not path.exists():
        raise BadDataError(f"{option} {path}: no such file or folder")
    kind = file_kind(path)
    if kind in ("image", "other"):
        what = "an image file" if kind == "image" else "neither a folder nor a text table"
        if not path.is_file() and kind == "other":
            what += " (not a regular file)"
        raise UsageError(
            f"{option} {path}: {what}; {option} takes a folder of class folders (or of train/ val/ test/ folders "
            "that hold them), or a CSV table (.csv, .tsv)"
        )


def source_name(cfg: TrainConfig) -> str:
    """What the run trains on, as people name it: the dataset, or the folder or table path."""
    return cfg.data if cfg.data is not None else cfg.dataset


def open_data(cfg: TrainConfig, input_shape: tuple[int, ...], recorded: dict[str, list[int]] | None = None) -> Data:
    """The training configuration's data, split (as `recorded` by an earlier run, if given) and described."""
    if cfg.data is not None:
        check_data_path(cfg.data)
    if cfg.label is not None and (cfg.data is None or not is_table(cfg.data)):
        raise UsageError("--label names a table's label column: it goes with --data TABLE.csv")
    task = task_of(cfg)
    if task.table_only and (cfg.data is None or not is_table(cfg.data)):
        raise UsageError(
            f"--task {task.name} reads its targets from a table's columns: give --data TABLE.csv (and --label "
            "a,b,c for several)"
        )
    features: tuple[str, ...] = ()
    if cfg.data is None:
        pool = read_builtin(cfg.dataset, cfg.data_root, cfg.download, input_shape, cfg.synthetic_size)
        known = dataset_info(cfg.dataset, input_shape)
        kind, shape = "image", known.sample_shape
    elif is_table(cfg.data):
        features = tuple(table_columns(Path(cfg.data), cfg.label)[0])
        pool = read_table(cfg.data, cfg.label, cfg.task)
        kind, shape = "table", (len(features),)
    else:
        pool = task.read_folder(cfg, input_shape)
        kind, shape = "image", tuple(input_shape)
    task.check_targets(pool.classes, str(cfg.data))
    strata = task.strata(pool.examples.labels)
    split = make_splits(pool, cfg.val_split, cfg.test_split, cfg.seed, recorded, strata)
    notes = list(pool.notes) + _too_few_to_hold_out(cfg, pool, split, strata)
    train, val, test = (pool.examples.subset(_index(split[name])) if split[name] else None for name in SPLITS)
    assert train is not None
    if cfg.data is None:
        mean, std = known.mean, known.std
    else:
        mean, std = channel_stats(train.inputs, 255.0 if kind == "image" else 1.0)
    # Targets are encoded (regression: standardized) with the training split's statistics.
    target_mean, target_std = task.target_stats(train.labels)
    train, val, test = (
        Examples(part.inputs, task.encode(part.labels, target_mean, target_std)) if part is not None else None
        for part in (train, val, test)
    )
    assert train is not None
    info = DataInfo(
        source_name(cfg), kind, shape, pool.classes, mean, std, features, task.name, target_mean, target_std,  # type: ignore[arg-type]
    )  # fmt: skip
    return Data(info, train, val, test, split, notes)


def _too_few_to_hold_out(
    cfg: TrainConfig, pool: Pool, split: dict[str, list[int]], strata: torch.Tensor | None
) -> list[str]:
    """A note for each split asked for (val_split, test_split > 0) that came out empty: the classes are too small."""
    empty = [
        f"{name}_split {fraction:g}"
        for name, fraction in (("val", cfg.val_split), ("test", cfg.test_split))
        if fraction > 0 and not split[name] and not bool((pool.given == SPLITS.index(name)).any())
    ]
    if not empty:
        return []
    most = (int(strata.bincount().max()) if strata is not None else len(pool.examples)) if len(pool.examples) else 0
    return [
        f"{source_name(cfg)}: too few examples to hold any out ({' and '.join(empty)} of at most {most} example(s) "
        "a class is none): without validation examples best.pt is chosen on test accuracy, and without test "
        "examples no test accuracy is measured; add examples (3 or more a class), or give the splits (val/ and "
        "test/ folders, or a split column)"
    ]


def _index(indices: list[int]) -> torch.Tensor:
    return torch.tensor(indices, dtype=torch.long)
