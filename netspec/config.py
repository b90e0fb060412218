"""The `train:` and `bench:` sections of a spec: typed, validated settings."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Gt, Lt
from pydantic import BaseModel, ConfigDict, Strict, model_validator

PositiveInt = Annotated[int, Strict(), Gt(0)]
DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar2", "synthetic")
Dataset = Literal["mnist", "fashion_mnist", "cifar10", "cifar2", "synthetic"]


class TrainConfig(BaseModel):
    """How to train a spec; every field can be overridden on the command line."""

    model_config = ConfigDict(extra="forbid")

    dataset: Dataset = "mnist"
    data_root: str = "data"
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
    augment: bool = False  # random crop (padding 4) and horizontal flip, on the device
    # Resize each batch (bilinear, on the device) to the spec's input size, as d2l trains AlexNet on
    # Fashion-MNIST at 224×224; the channel count must still match.
    resize: bool = False
    seed: int = 0
    device: str = "auto"
    synthetic_size: PositiveInt = 4096  # training examples of the synthetic dataset

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer sgd with momentum > 0")
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
    prune: bool = True  # stop trials below the median test accuracy of earlier trials at the same epoch
    seed: int = 0
    storage: str | None = None  # an Optuna RDB URL shared by several workers (default: DIR/study.db)
