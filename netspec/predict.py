"""Stage 6: use a finished run. `netspec eval RUN` measures it on its own test split; `netspec predict RUN
INPUT...` classifies image files, folders of images or the rows of a CSV table (or, as the run's task has it,
gives its numbers or its labels), with the run's spec, class names and input normalization, so that nothing
has to be repeated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from netspec.compiler import SpecNet, build, load_state
from netspec.config import TrainConfig
from netspec.data import Data, DataInfo, DeviceLoader, Examples, dataset_info, file_kind, is_table, read_rows
from netspec.data.folders import RESIZE_POLICIES, conversion_notes, decode_images, image_extensions, walk_images
from netspec.device import resolve_device
from netspec.errors import BadDataError, CheckpointError, UsageError
from netspec.fileio import load_checkpoint
from netspec.metrics import Evaluation, evaluate
from netspec.runfolder import RunDir
from netspec.shapes import infer_shapes
from netspec.source import SourceMap
from netspec.spec import Spec, load_spec, validate_spec
from netspec.tasks import Task, task_named
from netspec.train import load_data, resolve_config


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
        return RunDir(path).checkpoint(), path
    if not path.exists():
        raise UsageError(f"{path}: no such run folder or checkpoint")
    run_dir = path.parent if RunDir(path.parent).is_run() else None
    return path, run_dir


def load_trained(path: str | Path, spec: Spec | str | Path | None = None) -> TrainedModel:
    """The model of a run folder or checkpoint (with `spec`, that spec instead of the checkpoint's own)."""
    checkpoint, run_dir = checkpoint_of(path)
    ckpt = load_checkpoint(checkpoint)
    try:
        # Checked as a spec file is (bombs included), and named after the checkpoint that holds it.
        own = validate_spec(ckpt["spec"], SourceMap(file=f"{checkpoint} (its spec)")) if "spec" in ckpt else None
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
    if cfg.task not in (None, trained.info.task):
        raise UsageError(
            f"--task {cfg.task}: {trained.run_dir or trained.checkpoint} was trained for {trained.info.task}, and is "
            "evaluated as it was trained (give no --task)"
        )
    # The data is read as the run read it: with the run's task (a run from before tasks: classification, even of a
    # numeric label column that a new run would have to name a task for).
    cfg = cfg.model_copy(update={"task": trained.info.task})
    if cfg.data is not None and cfg.data != trained.cfg.data:
        from netspec.data import check_data_path

        check_data_path(cfg.data)
        kind = "table" if is_table(cfg.data) else "image"
        if kind != trained.info.kind:
            what = "a table" if kind == "table" else "a folder of images"
            raise UsageError(f"{trained.run_dir or trained.checkpoint} was trained on {trained_on(trained.info)}; "
                             f"{cfg.data} is {what}")  # fmt: skip
    recorded = RunDir(trained.run_dir).read_split() if trained.run_dir is not None and cfg.data == trained.cfg.data else None
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
) -> tuple[Evaluation, list[str], str, Task]:
    """A run's model evaluated on its data's test (or val) split, the split the run recorded: (evaluation, output
    names (classes, targets, labels), what was evaluated, the run's task)."""
    trained = load_trained(path, spec)
    cfg, data, part = run_split(trained, overrides, split)
    device = resolve_device(cfg.device)
    loader = DeviceLoader(part, data.info, cfg.test_batch_size, device)
    model = trained.model.to(device)
    task = task_named(data.info.task)
    result = evaluate(model, loader, task.meter(data.info, cfg, device), cfg.amp)
    return result, list(data.info.classes), f"{len(part):,} {split} examples of {data.info.name}", task


@dataclass
class Prediction:
    """What the model says of one input, as its task says it (tasks.Task.predictions): a classifier's class,
    probability and top classes; regression's values in the targets' units; multilabel's labels that are on."""

    input: str
    output: dict[str, Any]
    task: str = "classification"  # the run's (what `output` holds)

    @property
    def top(self) -> list[tuple[str, float]]:
        """A classifier's (class, probability), most probable first."""
        return [(t["class"], t["probability"]) for t in self.output.get("top", [])]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, **self.output}


def trained_on(info: DataInfo) -> str:
    """What a run's model takes, in words: "a table of 13 features", "1×28×28 images (grayscale)"."""
    if info.kind == "table":
        return f"a table of {len(info.features)} features"
    channels = {1: " (grayscale)", 3: " (RGB)"}.get(info.sample_shape[0], "") if len(info.sample_shape) == 3 else ""
    return f"{'×'.join(map(str, info.sample_shape))} images{channels}"


def predict(
    path: str | Path,
    inputs: list[str | Path],
    top_k: int = 3,
    device: str = "cpu",
    *,
    skip_bad_files: bool = False,
    resize_policy: str = "crop",
    report: Any = None,
    out: str | Path | None = None,
) -> list[Prediction]:
    """The top-k classes of each input (regression: its values; multilabel: the labels on): image files, folders of images (every image below them) or CSV tables
    (every row; a label column, if any, is ignored), prepared as the run prepared its data.

    Each input is checked against what the run was trained on first. Images are sized by `resize_policy` (crop,
    as training does; pad; stretch). Every conversion, and each unreadable file skipped with `skip_bad_files`,
    is said once through `report` (a function of one line); without `skip_bad_files` an unreadable file is an
    error that names every such file. `out`: a folder for a file per input, of a task that writes them
    (segmentation: each input's mask, at its own size); written only once every input was read."""
    if resize_policy not in RESIZE_POLICIES:
        raise UsageError(f"--resize-policy {resize_policy}: not one of {', '.join(RESIZE_POLICIES)}")
    trained = load_trained(path)
    info = trained.info
    if not inputs:
        raise UsageError("give the inputs to classify: image files, folders or a CSV table")
    paths = [Path(p) for p in inputs]
    check_inputs(str(path), info, paths)
    task = task_named(info.task)
    if out is not None and not task.writes_files:
        raise UsageError(f"--out writes a segmentation run's masks; {path} is a {task.name} run, whose predictions "
                         "are printed (--json for JSON)")  # fmt: skip
    policy = task.resize_policy or resize_policy  # (segmentation's masks were stretched: its inputs are too)
    names, batch, sizes = _read_inputs(info, paths, skip_bad_files, policy, report or (lambda line: None))
    x = batch.float() / info.scale
    view = (-1, *([1] * (x.dim() - 2)))
    x = (x - torch.tensor(info.mean).view(view)) / torch.tensor(info.std).view(view)
    torch_device = resolve_device(device)
    model = trained.model.to(torch_device)
    outputs = []
    with torch.inference_mode():
        for chunk in x.split(256):
            outputs.append(model(chunk.to(torch_device)).float().cpu())
    rows = task.predictions(torch.cat(outputs), info, trained.cfg, top_k)
    if out is not None:
        written = task.write_predictions(Path(out), names, torch.cat(outputs), sizes, info)
        for row, file in zip(rows, written, strict=True):
            row["mask"] = str(file)
    return [Prediction(name, row, info.task) for name, row in zip(names, rows, strict=True)]


def check_inputs(run: str, info: DataInfo, paths: list[Path]) -> None:
    """Each input exists and is of the kind the run was trained on (an image for an image run, a table for a
    table run), before anything is read: one line that says both otherwise."""
    for path in paths:
        if not path.exists():
            hint = f" (a broken link to {path.readlink()})" if path.is_symlink() else ""
            raise UsageError(f"{path}: no such file or folder{hint}")
        kind = file_kind(path)
        if info.kind == "table" and kind != "table":
            what = {"image": "an image", "folder": "a folder"}.get(kind, "not a text table")
            raise UsageError(
                f"{run} was trained on {trained_on(info)}; {path} is {what} (give a .csv file with the columns "
                f"{', '.join(info.features)})"
            )
        if info.kind == "image" and kind == "table":
            raise UsageError(f"{run} was trained on {trained_on(info)}; {path} is a table (give image files or folders)")


def _read_inputs(
    info: DataInfo, paths: list[Path], skip_bad_files: bool, policy: str, report: Any
) -> tuple[list[str], torch.Tensor, list[tuple[int, int]]]:
    """(names, the inputs as one tensor, each image's own (height, width); none for table rows)."""
    names: list[str] = []
    parts: list[torch.Tensor] = []
    if info.kind == "table":
        notes: list[str] = []
        for path in paths:
            rows, ids = read_rows(path, list(info.features), notes)
            names += ids
            parts.append(rows)
        for note in notes:
            report(note)
        return names, torch.cat(parts), []
    files: list[Path] = []
    seen: set[str] = set()
    for path in paths:
        for file in _images_under(path) if path.is_dir() else [path]:
            real = str(file.resolve()) if file.exists() else str(file)
            if real not in seen:
                seen.add(real)
                files.append(file)
    decoded = decode_images(files, info.sample_shape, skip_bad_files=True, policy=policy)
    bad = [(file, d.error) for file, d in zip(files, decoded, strict=True) if d.image is None]
    if bad and (not skip_bad_files or len(bad) == len(files)):
        shown = "; ".join(f"{file}: {reason}" for file, reason in bad[:5]) + ("; ..." if len(bad) > 5 else "")
        if len(bad) == len(files):
            raise BadDataError(f"none of the {len(files)} input(s) is a readable image: {shown}")
        raise BadDataError(
            f"{len(bad)} of {len(files)} inputs are not readable images: {shown} (pass --skip-bad-files to "
            "classify the others)"
        )
    for file, reason in bad:
        report(f"skipped {file}: {reason}")
    good = [(file, d) for file, d in zip(files, decoded, strict=True) if d.image is not None]
    names = [str(file) for file, _ in good]
    sources = [d.source for _, d in good]
    hint = ": --resize-policy pad (or stretch) keeps the whole image"
    for note in conversion_notes(sources, names, info.sample_shape, f"the run's input ({trained_on(info)})", policy, hint):
        report(note)
    sizes = [(h, w) for _, h, w in sources]  # each image's own (height, width)
    return names, torch.stack([d.image for _, d in good]), sizes  # type: ignore[misc]


def _images_under(folder: Path) -> list[Path]:
    extensions = image_extensions()
    files, _ = walk_images(folder, extensions)
    if not files:
        raise BadDataError(f"{folder}: holds no images ({', '.join(extensions)})")
    return files
