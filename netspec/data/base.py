"""What every data source gives: examples with labels, the classes, and which split each example belongs to.

A source (a built-in dataset, an image folder, a CSV table) reads its examples once into one tensor: images as
uint8 (N, C, H, W), table rows as float32 (N, F). `make_splits` then cuts them into train / val / test (keeping
the splits the data already has), and the training split's mean and std become the normalization that travels
with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from netspec.errors import BadDataError, DataError

SPLITS = ("train", "val", "test")
# Folder and column values that name a split (as Ultralytics and timm read them).
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
UNASSIGNED = -1  # an example of no given split: make_splits assigns it


@dataclass
class Examples:
    """Examples of one split: `inputs` uint8 images (N, C, H, W) or float32 rows (N, F); `labels` the targets, as
    the run's task has them: int64 class indices (N), float32 standardized numbers (N, T) for regression, float32
    0/1 (N, L) for multilabel (netspec.tasks)."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Examples:
        return Examples(self.inputs[index], self.labels[index])

    # The built-in datasets' loaders and tests call the inputs `images`.
    @property
    def images(self) -> torch.Tensor:
        return self.inputs


@dataclass
class Pool:
    """Everything a source read: examples, their class names, and the split each came with
    (an index into SPLITS, or UNASSIGNED). `ids` name the examples (file paths, table rows) for messages."""

    examples: Examples
    classes: tuple[str, ...]
    given: torch.Tensor  # int8 (N): 0 train, 1 val, 2 test, -1 none
    ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. files skipped by --skip-bad-files


@dataclass(frozen=True)
class DataInfo:
    """What a model trained on the data needs to know about it: its kind, shape, classes and normalization.
    Images are divided by `scale` (255) and then normalized per channel; table features per feature."""

    name: str
    kind: Literal["image", "table"]
    sample_shape: tuple[int, ...]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    features: tuple[str, ...] = ()  # a table's feature columns, in order
    # The task (netspec.tasks): `classes` then names the network's outputs (classes, target columns or labels);
    # regression's targets are standardized with the training split's target_mean and target_std.
    task: str = "classification"
    target_mean: tuple[float, ...] = ()
    target_std: tuple[float, ...] = ()

    @property
    def scale(self) -> float:
        return 255.0 if self.kind == "image" else 1.0

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "sample_shape": list(self.sample_shape),
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "features": list(self.features),
            "task": self.task,
            "target_mean": list(self.target_mean),
            "target_std": list(self.target_std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DataInfo:
        return cls(
            str(data["name"]),
            "table" if data["kind"] == "table" else "image",
            tuple(int(n) for n in data["sample_shape"]),  # type: ignore[attr-defined]
            tuple(str(c) for c in data["classes"]),  # type: ignore[attr-defined]
            tuple(float(v) for v in data["mean"]),  # type: ignore[attr-defined]
            tuple(float(v) for v in data["std"]),  # type: ignore[attr-defined]
            tuple(str(f) for f in data.get("features") or ()),  # type: ignore[attr-defined]
            str(data.get("task") or "classification"),  # a run from before tasks classified
            tuple(float(v) for v in data.get("target_mean") or ()),  # type: ignore[attr-defined]
            tuple(float(v) for v in data.get("target_std") or ()),  # type: ignore[attr-defined]
        )


@dataclass
class Data:
    """A source's examples cut into splits. `val` or `test` may be None (val_split 0; no test split)."""

    info: DataInfo
    train: Examples
    val: Examples | None
    test: Examples | None
    split: dict[str, list[int]]  # the pool indices of each split, recorded in the run folder
    notes: list[str] = field(default_factory=list)

    def counts(self) -> str:
        parts = zip(SPLITS, (self.train, self.val, self.test), strict=True)
        return ", ".join(f"{len(part):,} {name}" for name, part in parts if part is not None and len(part))


def make_splits(
    pool: Pool,
    val_split: float,
    test_split: float,
    seed: int,
    recorded: dict[str, list[int]] | None = None,
    strata: torch.Tensor | None = None,
) -> dict[str, list[int]]:
    """Pool indices of train, val and test.

    Splits the data came with are kept. Without a test split, `test_split` of the unassigned examples is held out
    for testing; without a validation split, `val_split` of the training examples (given or unassigned) is held
    out for validation. Both cuts are stratified on `strata` (the same fraction of each class, at least one example
    of a class that has one to spare) and seeded; with `strata` None (regression, multilabel) they are seeded
    random cuts. `recorded` (a run's split.json) is used as it is, after checking it
    still fits the data.
    """
    n = len(pool.examples)
    if recorded is not None:
        flat = [i for name in SPLITS for i in recorded.get(name, [])]
        if len(flat) != n or sorted(flat) != list(range(n)):
            raise DataError(
                f"the data has changed since the run recorded its split ({n:,} examples now, {len(flat):,} then); "
                "train a new run on it"
            )
        return {name: list(recorded.get(name, [])) for name in SPLITS}
    gen = torch.Generator().manual_seed(seed)
    given = pool.given
    labels = strata if strata is not None else torch.zeros(n, dtype=torch.long)
    test = (given == 2).nonzero().flatten()
    val = (given == 1).nonzero().flatten()
    train = (given == 0).nonzero().flatten()
    unassigned = (given == UNASSIGNED).nonzero().flatten()
    if len(test) == 0 and test_split > 0:
        held, unassigned = _stratified_cut(unassigned, labels, test_split, gen)
        test = held
    train = torch.cat([train, unassigned])
    if len(val) == 0 and val_split > 0:
        val, train = _stratified_cut(train, labels, val_split, gen)
    if len(train) == 0:
        raise BadDataError(
            "no training examples are left after the validation and test splits; add examples, or lower "
            "--val-split and --test-split"
        )
    return {name: sorted(idx.tolist()) for name, idx in zip(SPLITS, (train, val, test), strict=True)}


def _stratified_cut(
    index: torch.Tensor, labels: torch.Tensor, fraction: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(held, kept): `fraction` of each class of `index`, drawn at random, and the rest."""
    held, kept = [], []
    index = index[torch.randperm(len(index), generator=gen)]
    for cls in labels[index].unique().tolist():
        members = index[labels[index] == cls]
        take = round(fraction * len(members))
        if take == 0 and len(members) > 1:
            take = 1
        held.append(members[:take])
        kept.append(members[take:])
    empty = torch.zeros(0, dtype=torch.long)
    return torch.cat(held or [empty]), torch.cat(kept or [empty])


def channel_stats(inputs: torch.Tensor, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per channel (images, after dividing by `scale`) or per feature (rows); a constant one gets
    std 1 so that normalizing never divides by zero."""
    if len(inputs) == 0:
        raise DataError("the training split is empty")
    dims = [0, *range(2, inputs.dim())]
    x = inputs.double() / scale
    mean = x.mean(dims)
    std = x.std(dims, correction=0) if len(inputs) > 1 else torch.ones_like(mean)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


# The names of netspec 0.1, kept for code written against them (tests/test_train.py uses ImageData): the one
# place for aliases of the old API.
ImageData = Examples
DatasetInfo = DataInfo
