"""The `train:`, `bench:` and `sweep:` sections of a spec: typed, validated settings.

This is the one source of the settings: each field's type, default, validation and description (which
`netspec schema` carries), and each choice list (a `Literal`, read with `choices`).
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

PositiveInt = Annotated[int, Strict(), Gt(0)]
# The synthetic dataset is held in memory (one byte a value): a million examples is already gigabytes for images.
MAX_SYNTHETIC_SIZE = 1_000_000
# torch's generators take 64-bit seeds.
Seed = Annotated[int, Ge(0), Le(2**63 - 1)]
# Optuna's samplers seed numpy, which takes 0 to 2**32 - 1.
SamplerSeed = Annotated[int, Ge(0), Le(2**32 - 1)]
Dataset = Literal["mnist", "fashion_mnist", "cifar10", "cifar2", "synthetic"]
Optimizer = Literal["sgd", "adam", "adamw"]  # engine.OPTIMIZERS maps each to its class
AmpMode = Literal["none", "bf16", "fp16"]
Scheduler = Literal["none", "step", "cosine", "onecycle"]
Init = Literal["default", "xavier_uniform", "kaiming"]
Sampler = Literal["grid", "tpe", "random"]
MemoryDevice = Literal["cpu", "cuda"]  # the devices whose kernels' memory rules netspec models
# What a network learns (tasks.TASKS holds one Task per name), the losses the tasks offer (each task says which
# are its own) and what early stopping and best.pt may watch (each task says which are its own, and which way is
# better).
TaskName = Literal["classification", "regression", "multilabel", "segmentation"]
Loss = Literal["cross_entropy", "mse", "l1", "huber", "bce"]
Monitor = Literal[
    "val_loss", "val_accuracy", "val_mae", "val_rmse", "val_r2", "val_f1", "val_exact_match", "val_label_accuracy",
    "val_pixel_accuracy", "val_mean_iou",
]  # fmt: skip


def choices(literal: object) -> tuple[str, ...]:
    """The values a `Literal` allows, e.g. choices(Optimizer) == ("sgd", "adam", "adamw")."""
    return get_args(literal)


class Crop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    padding: Annotated[int, Strict(), Ge(0)] = Field(4, description="zero padding on each side before cropping")


class Augment(BaseModel):
    """Augmentation applied on the device to each training batch (images only)."""

    model_config = ConfigDict(extra="forbid")

    crop: Crop | None = Field(None, description="random crop of the zero-padded image, back to its size")
    flip: bool = Field(False, description="horizontal flip of half the images")
    cutout: Annotated[int, Strict(), Ge(0)] = Field(0, description="a random square of this side set to zero (0: none)")

    @classmethod
    def of(cls, value: bool | Augment) -> Augment | None:
        """`augment: true` means crop (padding 4) and flip, as netspec 0.1 did; false means none."""
        if isinstance(value, Augment):
            return value if (value.crop is not None or value.flip or value.cutout) else None
        return cls(crop=Crop(), flip=True) if value else None


class TrainConfig(BaseModel):
    """How to train a spec; every field can be overridden on the command line."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # `lr: .inf` is refused, not trained into NaN

    dataset: Dataset = Field("mnist", description="a built-in dataset")
    data_root: str = Field("data", description="folder holding the built-in datasets in torchvision's layout")
    data: str | None = Field(
        None, description="your own data: a folder of class folders (or of train/ val/ test/ folders), or a CSV table"
    )
    label: str | None = Field(
        None,
        description="a table's label column (default: the last column); several, as a,b,c, for regression "
        "targets or multi-label yes/no columns",
    )
    task: TaskName | None = Field(
        None,
        description="what the network learns: classification (the default, but a table's numeric label column must "
        "say it), regression (numeric targets), multilabel (several yes/no labels) or segmentation (a class per pixel, "
        "from a folder of images/ and masks/)",
    )
    loss: Loss | None = Field(
        None,
        description="the loss (default: the task's): cross_entropy (classification, segmentation), mse, l1 or huber "
        "(regression), bce (multilabel)",
    )
    threshold: Annotated[float, Ge(0.0), Lt(1.0)] = Field(
        0.5, description="multilabel: a label is on when its predicted probability is at least this"
    )
    skip_bad_files: bool = Field(False, description="skip unreadable images (counted) instead of stopping")
    ignore_index: Annotated[int, Strict(), Ge(0)] | None = Field(
        None,
        description="segmentation: the mask value of pixels left out of the loss and the metrics (VOC: 255, its "
        "object borders)",
    )
    val_split: Annotated[float, Ge(0.0), Lt(1.0)] = Field(
        0.1,
        description="share of the training examples held out for validation when the data has none (stratified, "
        "seeded; 0: none, and best.pt and early stopping then fall back on test)",
    )
    test_split: Annotated[float, Ge(0.0), Lt(1.0)] = Field(
        0.1, description="share of the examples held out for testing when the data has no test split"
    )
    patience: PositiveInt | None = Field(None, description="early stopping: epochs without improvement of monitor")
    monitor: Monitor = Field(
        "val_loss",
        description="what patience watches (and, for regression and multilabel, what best.pt is chosen on): "
        "val_loss, or one of the task's metrics",
    )
    init_from: str | None = Field(
        None,
        description="start from these weights: a netspec checkpoint, a PyTorch state_dict, or a library's "
        "pretrained weights from its cache (torchvision:resnet18; download fetches them), matched by name or "
        "position",
    )
    skip_mismatched: bool = Field(
        False, description="with init_from: keep tensors whose shapes differ (a new head) at their initialization"
    )
    freeze: list[str] = Field([], description="parameter-name prefixes (state_dict keys) kept fixed")
    download: bool = Field(False, description="download the built-in dataset if missing (needs internet)")
    epochs: PositiveInt = Field(10, description="number of epochs")
    batch_size: PositiveInt = Field(64, description="training batch size")
    test_batch_size: PositiveInt = Field(1024, description="batch size of evaluation")
    optimizer: Optimizer = Field("sgd", description="optimizer")
    lr: Annotated[float, Gt(0.0)] = Field(0.01, description="learning rate")
    momentum: Annotated[float, Ge(0.0), Lt(1.0)] = Field(0.0, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD)")
    weight_decay: Annotated[float, Ge(0.0)] = Field(0.0, description="weight decay")
    scheduler: Scheduler = Field("none", description="learning-rate schedule")
    step_size: PositiveInt = Field(30, description="epochs between decays (scheduler step)")
    gamma: Annotated[float, Gt(0.0)] = Field(0.1, description="decay factor (scheduler step)")
    init: Init = Field("default", description="weight initialization")
    label_smoothing: Annotated[float, Ge(0.0), Lt(1.0)] = Field(
        0.0, description="label smoothing of the loss (0 <= s < 1)"
    )
    amp: AmpMode = Field("none", description="automatic mixed precision")
    channels_last: bool = Field(False, description="channels_last memory format for images")
    compile: bool = Field(False, description="train through torch.compile")
    grad_clip: Annotated[float, Gt(0.0)] | None = Field(None, description="clip the gradient norm to this value")
    augment: bool | Augment = Field(
        False, description="random crop (padding 4) and horizontal flip of training images, on the device"
    )
    resize: bool = Field(
        False,
        description="resize each batch (bilinear, on the device) to the spec's input size, as d2l trains AlexNet "
        "on Fashion-MNIST at 224×224; the channel count must still match",
    )
    seed: Seed = Field(0, description="random seed for initialization, splits, shuffling and dropout")
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    synthetic_size: Annotated[int, Strict(), Gt(0), Le(MAX_SYNTHETIC_SIZE)] = Field(
        4096, description="training examples of the synthetic dataset"
    )

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

    batch_sizes: list[PositiveInt] = Field([], description="batch sizes to sweep (empty: the train section's)")
    modes: list[Literal["train", "infer"]] = Field(["train", "infer"], description="train, infer or both")
    compile: Literal["off", "on", "both"] = Field("off", description="eager, torch.compile, or both side by side")
    amp: AmpMode = Field("none", description="automatic mixed precision")
    channels_last: bool = Field(False, description="channels_last memory format for images")
    devices: list[str] = Field([], description="cpu, cuda, cuda:N (empty: every available device)")
    warmup: Annotated[int, Strict(), Ge(0)] = Field(5, description="untimed steps before timing")
    steps: PositiveInt = Field(20, description="steps per timed repeat")
    repeats: PositiveInt = Field(5, description="timed repeats; the table shows the median")


GridValue = list[int | float | str | bool] | str


class SweepConfig(BaseModel):
    """The `sweep:` section: what `netspec sweep` varies, and how (command-line options win)."""

    model_config = ConfigDict(extra="forbid")

    grid: dict[str, GridValue] = Field(
        {},
        description="a train setting or spec variable and its values: KEY: [values] (categorical), or "
        '"low..high" / "low..high:log" (a range, for tpe and random)',
    )
    sampler: Sampler = Field("grid", description="how trials are chosen")
    trials: PositiveInt | None = Field(None, description="number of trials, for tpe and random")
    epochs: PositiveInt | None = Field(None, description="every trial's epochs (default: the train section's)")
    prune: bool = Field(
        True, description="stop trials below the median validation accuracy of finished trials of their architecture"
    )
    seed: SamplerSeed = Field(0, description="the sampler's seed (numpy's range: Optuna's samplers)")
    storage: str | None = Field(
        None,
        description="an Optuna RDB URL (sqlite:///..., postgresql://...) shared by several workers (default: "
        "DIR/study.db)",
    )
