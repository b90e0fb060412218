"""The `train:` and `bench:` sections of a spec: typed, validated settings."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Strict, model_validator

PositiveInt = Annotated[int, Strict(), Gt(0)]
# The synthetic dataset is held in memory (one byte a value): a million examples is already gigabytes for images.
MAX_SYNTHETIC_SIZE = 1_000_000
# torch's generators take 64-bit seeds.
Seed = Annotated[int, Ge(0), Le(2**63 - 1)]
DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar2", "synthetic")
Dataset = Literal["mnist", "fashion_mnist", "cifar10", "cifar2", "synthetic"]


class Crop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    padding: Annotated[int, Strict(), Ge(0)] = 4


class Augment(BaseModel):
    """Augmentation applied on the device to each training batch (images only)."""

    model_config = ConfigDict(extra="forbid")

    crop: Crop | None = None  # random crop of the zero-padded image, back to its size
    flip: bool = False  # horizontal flip of half the images
    cutout: Annotated[int, Strict(), Ge(0)] = 0  # a random square of this side set to zero (0: none)

    @classmethod
    def of(cls, value: bool | Augment) -> Augment | None:
        """`augment: true` means crop (padding 4) and flip, as netspec 0.1 did; false means none."""
        if isinstance(value, Augment):
            return value if (value.crop is not None or value.flip or value.cutout) else None
        return cls(crop=Crop(), flip=True) if value else None


class TrainConfig(BaseModel):
    """How to train a spec; every field can be overridden on the command line."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # `lr: .inf` is refused, not trained into NaN

    dataset: Dataset = "mnist"
    data_root: str = "data"
    # The user's own data: a folder of class folders (or of train/ val/ test/ folders), or a .csv table.
    data: str | None = None
    label: str | None = None  # a table's label column (default: the last)
    skip_bad_files: bool = False  # skip unreadable images (counted in the output) instead of stopping
    # Held out for validation when the data has no validation split: this fraction of the training examples
    # (stratified, seeded). 0: no validation split; then best.pt and early stopping fall back on test.
    val_split: Annotated[float, Ge(0.0), Lt(1.0)] = 0.1
    test_split: Annotated[float, Ge(0.0), Lt(1.0)] = 0.1  # held out for testing when the data has no test split
    patience: PositiveInt | None = None  # early stopping: epochs without improvement of `monitor`
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    init_from: str | None = None  # start from a netspec checkpoint or a PyTorch state_dict file
    skip_mismatched: bool = False  # with init_from: leave tensors whose shapes differ at their initialization
    freeze: list[str] = []  # parameter-name prefixes (state_dict keys) kept fixed
    download: bool = False
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    test_batch_size: PositiveInt = 1024
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: Annotated[float, Gt(0.0)] = 0.01
    momentum: Annotated[float, Ge(0.0), Lt(1.0)] = 0.0
    nesterov: bool = False
    weight_decay: Annotated[float, Ge(0.0)] = 0.0
    scheduler: Literal["none", "step", "cosine", "onecycle"] = "none"
    step_size: PositiveInt = 30  # epochs between decays, for scheduler: step
    gamma: Annotated[float, Gt(0.0)] = 0.1
    init: Literal["default", "xavier_uniform", "kaiming"] = "default"
    label_smoothing: Annotated[float, Ge(0.0), Lt(1.0)] = 0.0
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    grad_clip: Annotated[float, Gt(0.0)] | None = None
    augment: bool | Augment = False  # true: random crop (padding 4) and horizontal flip, on the device
    # Resize each batch (bilinear, on the device) to the spec's input size, as d2l trains AlexNet on
    # Fashion-MNIST at 224×224; the channel count must still match.
    resize: bool = False
    seed: Seed = 0
    device: str = "auto"
    synthetic_size: Annotated[int, Strict(), Gt(0), Le(MAX_SYNTHETIC_SIZE)] = 4096  # examples of the synthetic dataset

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer sgd with momentum > 0")
        if self.val_split + self.test_split >= 1:
            raise ValueError("val_split and test_split together must leave some examples to train on")
        return self


class BenchConfig(BaseModel):
    """Defaults for `netspec bench`."""

    model_config = ConfigDict(extra="forbid")

    batch_sizes: list[PositiveInt] = []  # empty: the train section's batch size
    modes: list[Literal["train", "infer"]] = ["train", "infer"]
    compile: Literal["off", "on", "both"] = "off"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    devices: list[str] = []  # empty: every available device
    warmup: Annotated[int, Strict(), Ge(0)] = 5
    steps: PositiveInt = 20
    repeats: PositiveInt = 5


GridValue = list[int | float | str | bool] | str


class SweepConfig(BaseModel):
    """The `sweep:` section: what `netspec sweep` varies, and how (command-line options win)."""

    model_config = ConfigDict(extra="forbid")

    # KEY: [values] (categorical), or "low..high" / "low..high:log" (a range, for tpe and random)
    grid: dict[str, GridValue] = {}
    sampler: Literal["grid", "tpe", "random"] = "grid"
    trials: PositiveInt | None = None  # for tpe and random
    epochs: PositiveInt | None = None  # every trial's epochs (default: the train section's)
    prune: bool = True  # stop trials below the median validation accuracy of finished trials of their architecture
    seed: Annotated[int, Ge(0), Le(2**32 - 1)] = 0  # numpy's range (optuna's samplers)
    storage: str | None = None  # an Optuna RDB URL shared by several workers (default: DIR/study.db)
