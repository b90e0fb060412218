"""Stage 6: use a finished run. `netspec eval RUN` measures it on its own test split; `netspec predict RUN
INPUT...` classifies image files, folders of images or the rows of a CSV table, with the run's spec, class
names and input normalization, so that nothing has to be repeated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from netspec.compiler import SpecNet, build, load_state
from netspec.config import TrainConfig
from netspec.data import Data, DataInfo, DeviceLoader, Examples, dataset_info, decode_image, image_extensions, read_rows
from netspec.device import resolve_device
from netspec.errors import CheckpointError, DataError, UsageError
from netspec.fileio import load_checkpoint
from netspec.shapes import infer_shapes
from netspec.spec import Spec, load_spec, validate_spec
from netspec.train import Evaluation, evaluate, load_data, read_split, resolve_config


@dataclass
class TrainedModel:
    """A run's model with its weights, and what it needs to know of its data."""

    spec: Spec
    cfg: TrainConfig
    model: SpecNet
    info: DataInfo
    checkpoint: Path
    run_dir: Path | None


def checkpoint_of(path: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint file, run folder or None): a run folder means its best.pt (last.pt if it has none)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name, path
        raise CheckpointError(f"{path}: a folder without best.pt or last.pt (give a run folder or a checkpoint)")
    if not path.exists():
        raise UsageError(f"{path}: no such run folder or checkpoint")
    run_dir = path.parent if (path.parent / "split.json").exists() or (path.parent / "spec.yaml").exists() else None
    return path, run_dir


def load_trained(path: str | Path, spec: Spec | str | Path | None = None) -> TrainedModel:
    """The model of a run folder or checkpoint (with `spec`, that spec instead of the checkpoint's own)."""
    checkpoint, run_dir = checkpoint_of(path)
    ckpt = load_checkpoint(checkpoint)
    try:
        own = validate_spec(ckpt["spec"]) if "spec" in ckpt else None
        cfg = TrainConfig.model_validate(ckpt["train_config"]) if "train_config" in ckpt else TrainConfig()
    except ValidationError as exc:
        raise CheckpointError(f"{checkpoint}: its spec or settings are unreadable ({exc})") from None
    if spec is not None:
        own = spec if isinstance(spec, Spec) else load_spec(spec)
    if own is None:
        raise CheckpointError(f"{checkpoint}: holds no spec; give the spec it was trained from")
    if "model" not in ckpt:
        raise CheckpointError(f"{checkpoint}: holds no model weights")
    model = build(own)
    assert isinstance(model, SpecNet)
    load_state(model, ckpt["model"], str(checkpoint))
    model.eval()
    if isinstance(ckpt.get("data"), dict):
        info = DataInfo.from_dict(ckpt["data"])
    else:  # a checkpoint of netspec 0.1: a built-in dataset, with its published normalization
        info = dataset_info(cfg.dataset, tuple(own.input))
    return TrainedModel(own, cfg, model, info, checkpoint, run_dir)


def run_split(
    trained: TrainedModel, overrides: dict[str, Any] | None = None, split: str = "test"
) -> tuple[TrainConfig, Data, Examples]:
    """A run's settings, its data cut as the run recorded it (split.json), and the `split` part ("test" or
    "val"). `overrides` may point at the data elsewhere (data_root, data) or change the device and batch size."""
    cfg = resolve_config(trained.spec.model_copy(update={"train": trained.cfg}), overrides)
    recorded = read_split(trained.run_dir) if trained.run_dir is not None and cfg.data == trained.cfg.data else None
    data = load_data(infer_shapes(trained.spec), cfg, recorded)
    part = data.test if split == "test" else data.val
    if part is None:
        other = "val" if split == "test" else "test"
        raise UsageError(f"{data.info.name} has no {split} split in this run; evaluate --split {other}")
    return cfg, data, part


def evaluate_run(
    path: str | Path,
    overrides: dict[str, Any] | None = None,
    split: str = "test",
    spec: Spec | str | Path | None = None,
) -> tuple[Evaluation, list[str], str]:
    """A run's model evaluated on its data's test (or val) split, the split the run recorded: (evaluation, class
    names, what was evaluated)."""
    trained = load_trained(path, spec)
    cfg, data, part = run_split(trained, overrides, split)
    device = resolve_device(cfg.device)
    loader = DeviceLoader(part, data.info, cfg.test_batch_size, device)
    model = trained.model.to(device)
    result = evaluate(model, loader, len(data.info.classes), cfg.amp)
    return result, list(data.info.classes), f"{len(part):,} {split} examples of {data.info.name}"


@dataclass
class Prediction:
    input: str
    top: list[tuple[str, float]]  # (class, probability), most probable first

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "class": self.top[0][0],
            "probability": self.top[0][1],
            "top": [{"class": c, "probability": p} for c, p in self.top],
        }


def predict(path: str | Path, inputs: list[str | Path], top_k: int = 3, device: str = "cpu") -> list[Prediction]:
    """The top-k classes of each input: image files, folders of images (every image below them) or CSV tables
    (every row; a label column, if any, is ignored), prepared as the run prepared its data."""
    trained = load_trained(path)
    info = trained.info
    if not inputs:
        raise UsageError("give the inputs to classify: image files, folders or a CSV table")
    names, batch = _read_inputs(info, [Path(p) for p in inputs])
    x = batch.float() / info.scale
    view = (-1, *([1] * (x.dim() - 2)))
    x = (x - torch.tensor(info.mean).view(view)) / torch.tensor(info.std).view(view)
    torch_device = resolve_device(device)
    model = trained.model.to(torch_device)
    probabilities = []
    with torch.inference_mode():
        for chunk in x.split(256):
            probabilities.append(model(chunk.to(torch_device)).float().softmax(1).cpu())
    probs = torch.cat(probabilities)
    k = min(top_k, len(info.classes))
    values, indices = probs.topk(k, dim=1)
    return [
        Prediction(name, [(info.classes[i], round(v, 6)) for v, i in zip(vs.tolist(), ix.tolist(), strict=True)])
        for name, vs, ix in zip(names, values, indices, strict=True)
    ]


def _read_inputs(info: DataInfo, paths: list[Path]) -> tuple[list[str], torch.Tensor]:
    names: list[str] = []
    parts: list[torch.Tensor] = []
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if info.kind == "table":
            if path.is_dir():
                raise UsageError(f"{path}: the model classifies table rows; give a .csv file with the columns "
                                 f"{', '.join(info.features)}")  # fmt: skip
            rows, ids = read_rows(path, list(info.features))
            names += ids
            parts.append(rows)
            continue
        files = _images_under(path) if path.is_dir() else [path]
        for file in files:
            image = decode_image(file, info.sample_shape)
            assert image is not None
            names.append(str(file))
            parts.append(image.unsqueeze(0))
    if not parts:
        raise DataError(f"no inputs found in {', '.join(map(str, paths))}")
    return names, torch.cat(parts)


def _images_under(folder: Path) -> list[Path]:
    extensions = image_extensions()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(extensions))
    if not files:
        raise DataError(f"{folder}: holds no images ({', '.join(extensions)})")
    return files
