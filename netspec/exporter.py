"""A spec out of netspec: ONNX, torch.export (.pt2), or a plain PyTorch file a person can read.

Every format is checked before it is kept: the exported artifact runs on a random batch
(of another size than the example batch when the batch is dynamic) and its output is
compared with the netspec-built model's. Files are written atomically.

The Python export walks the same shaped tree as the compiler: `__init__` creates each
module from its kind's `ModuleCall` (real arguments, input sizes filled in) in the
same nesting, so its state_dict keys are netspec's, and `forward` is straight-line code
with the inferred shape of every line in a comment.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netspec.codegen import class_name, write_classes
from netspec.compiler import build, load_state
from netspec.errors import CheckpointError, NetspecError, UsageError
from netspec.fileio import atomic_write_bytes, atomic_write_text, load_checkpoint
from netspec.layers import format_shape
from netspec.runfolder import RunDir
from netspec.shapes import NetShape, infer_shapes
from netspec.spec import Spec
from netspec.tasks import task_named

FORMATS = ("onnx", "pt2", "python")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "python": ".py"}
TOLERANCE = {"onnx": 1e-4, "pt2": 1e-5, "python": 1e-6}
EXAMPLE_BATCH = 2
CHECK_BATCH = 3  # another size than the example's, so a dynamic batch is really dynamic


class ExportError(NetspecError):
    """A spec that cannot be exported in a format, or an export that does not match the model."""


@dataclass
class ExportResult:
    format: str
    path: Path
    max_abs_diff: float
    check_batch: int
    weights_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": str(self.path),
            "max_abs_diff": self.max_abs_diff,
            "check_batch": self.check_batch,
            "weights_path": str(self.weights_path) if self.weights_path else None,
            "notes": self.notes,
        }


@dataclass
class Preprocessing:
    """How the training run normalized its inputs (from a checkpoint): images are pixels 0..255 divided by
    255, then (x - mean) / std per channel; table rows are (x - mean) / std per feature."""

    kind: str  # image or table
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()  # the outputs' names: classes, regression targets or labels
    task: str = "classification"
    target_mean: tuple[float, ...] = ()  # regression: outputs are standardized; value = output * std + mean
    target_std: tuple[float, ...] = ()

    @property
    def scale(self) -> float:
        return 255.0 if self.kind == "image" else 1.0

    def describe(self) -> str:
        if self.kind == "image":
            return "raw pixels 0..255, normalized inside"
        return "raw feature values, standardized inside"


class Normalized(nn.Module):
    """A model that takes raw inputs: (x / scale - mean) / std, then the model (for ONNX and pt2 exports)."""

    def __init__(self, model: nn.Module, pre: Preprocessing, rank: int) -> None:
        super().__init__()
        self.model, self.scale = model, pre.scale
        view = (-1, *([1] * (rank - 1)))  # per channel of an image, per feature of a row
        self.register_buffer("mean", torch.tensor(pre.mean).view(view))
        self.register_buffer("std", torch.tensor(pre.std).view(view))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x / self.scale - self.mean) / self.std)


@dataclass
class _Job:
    net: NetShape
    model: nn.Module  # the netspec model, with the checkpoint's weights
    path: Path
    batch: int | str
    opset: int | None
    checkpoint: Path | None
    pre: Preprocessing | None  # from the checkpoint
    preprocess: bool  # ONNX and pt2 take raw inputs (pre is baked in)

    @property
    def exported(self) -> nn.Module:
        """What ONNX and pt2 export: the model, or the model behind its input normalization."""
        if self.pre is None or not self.preprocess:
            return self.model
        return Normalized(self.model, self.pre, len(self.net.input_shape)).eval()

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        example, check = _inputs(self.net, self.batch)
        if self.pre is not None and self.preprocess and self.pre.kind == "image":  # raw pixels
            example, check = example.sigmoid() * 255, check.sigmoid() * 255
        return example, check


def export(
    spec: Spec | NetShape | str | Path,
    format: str = "onnx",
    *,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    batch: int | str = "dynamic",
    opset: int | None = None,
    preprocess: bool = True,
) -> ExportResult:
    """Export a spec (with a run's trained weights if `checkpoint` is given) and check the result. `spec` may be a
    run folder (or a checkpoint file): its own spec, best.pt (else last.pt, or `checkpoint`) and normalization.

    With a checkpoint, the run's input normalization travels with the model: ONNX and pt2 take raw inputs
    (pixels 0..255, or raw table features) and normalize them inside, unless `preprocess=False`; the Python
    file states it and has a `preprocess` function.
    """
    if format not in FORMATS:
        raise UsageError(f"unknown export format '{format}'; choose from {', '.join(FORMATS)}")
    if batch != "dynamic" and not (isinstance(batch, int) and batch > 0):
        raise UsageError(f"batch must be 'dynamic' or a positive whole number, got {batch!r}")
    ckpt = None
    if isinstance(spec, (str, Path)) and is_run_path(Path(spec)):
        spec, checkpoint, ckpt = _run_spec(Path(spec), checkpoint)
    net = spec if isinstance(spec, NetShape) else infer_shapes(spec)
    model = build(net)
    pre = None
    if checkpoint is not None:
        ckpt = ckpt if ckpt is not None else load_checkpoint(checkpoint)
        if "model" not in ckpt:
            raise UsageError(f"{checkpoint}: holds no model weights")
        try:
            load_state(model, ckpt["model"], str(checkpoint))
        except CheckpointError as exc:
            raise UsageError(f"{exc}{_trained_with(Path(checkpoint), ckpt)}") from None
        pre = _preprocessing(ckpt, len(net.input_shape))
    model.eval()
    path = output_path(net.name, format, out)
    job = _Job(net, model, path, batch, opset, Path(checkpoint) if checkpoint else None, pre, preprocess)
    return {"onnx": _export_onnx, "pt2": _export_pt2, "python": _export_python}[format](job)


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def is_run_path(path: Path) -> bool:
    """A run folder (or a checkpoint file) given where a spec goes: `netspec export runs/x`."""
    return path.is_dir() or path.suffix.lower() in CHECKPOINT_SUFFIXES


def _run_spec(run: Path, checkpoint: str | Path | None) -> tuple[Spec, Path, dict[str, Any]]:
    """A run's spec (the one its checkpoint holds, as runs/x/spec.yaml shows it) and checkpoint: best.pt, else
    last.pt, or the `checkpoint` given."""
    from netspec.predict import checkpoint_of
    from netspec.spec import validate_spec

    path, run_dir = checkpoint_of(checkpoint if checkpoint is not None else run)
    ckpt = load_checkpoint(path)
    if "spec" in ckpt:
        try:
            spec = validate_spec(ckpt["spec"])
        except NetspecError as exc:
            raise CheckpointError(f"{path}: the spec it holds is invalid ({exc})") from None
        except ValueError as exc:  # pydantic's ValidationError
            raise CheckpointError(f"{path}: the spec it holds is unreadable ({exc})") from None
    elif run_dir is not None and RunDir(run_dir).spec_file.is_file():
        from netspec.spec import load_spec

        spec = load_spec(RunDir(run_dir).spec_file)
    else:
        raise UsageError(
            f"{path}: holds no spec; give the spec it was trained from: netspec export SPEC --checkpoint {path}"
        )
    return spec, path, ckpt


def _trained_with(checkpoint: Path, ckpt: dict[str, Any]) -> str:
    """Where a checkpoint that does not fit the given spec says its own spec is."""
    if "spec" not in ckpt:
        return ""
    from netspec.predict import checkpoint_of

    run_dir = checkpoint_of(checkpoint)[1]
    if run_dir is not None and RunDir(run_dir).spec_file.is_file():
        spec_file = RunDir(run_dir).spec_file
        return f". The checkpoint was trained with {spec_file}; export the run folder: netspec export {run_dir}"
    return f". The checkpoint holds the spec it was trained with; export it alone: netspec export {checkpoint}"


def _preprocessing(ckpt: dict[str, Any], rank: int) -> Preprocessing | None:
    """The input normalization a checkpoint's run used, if it says."""
    norm = ckpt.get("normalization")
    if not isinstance(norm, dict) or not norm.get("mean") or not norm.get("std"):
        return None
    data = ckpt.get("data") if isinstance(ckpt.get("data"), dict) else {}
    kind = data.get("kind") or ("image" if rank == 3 else "table")
    classes = tuple(str(c) for c in ckpt.get("classes") or ())
    return Preprocessing(
        kind, tuple(map(float, norm["mean"])), tuple(map(float, norm["std"])), classes,
        str(data.get("task") or "classification"), tuple(map(float, data.get("target_mean") or ())),
        tuple(map(float, data.get("target_std") or ())),
    )  # fmt: skip


def output_path(name: str, format: str, out: str | Path | None) -> Path:
    """Where an export goes. A folder (existing, or written with a trailing slash, then created) gets
    `<name>.<suffix>`; a file name without a suffix gets the format's; an existing file of another format is
    never overwritten."""
    suffix = SUFFIXES[format]
    if out is None:
        path = Path(f"{name}{suffix}")
    elif str(out).endswith(("/", os.sep)) or Path(out).is_dir():
        folder = Path(out)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{folder}: cannot create the folder ({exc.strerror})") from None
        path = folder / f"{name}{suffix}"
    else:
        path = Path(out)
        if not path.suffix:
            path = path.with_name(path.name + suffix)
    if not path.parent.exists():
        raise UsageError(f"{path.parent}: no such folder (end --out with / to create a folder)")
    if path.exists() and path.suffix != suffix:
        raise UsageError(
            f"{path} exists and is not a {suffix} file; exporting {format} would overwrite it: give --out a "
            f"{suffix} name or a folder"
        )
    return path


def _inputs(net: NetShape, batch: int | str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(EXAMPLE_BATCH if batch == "dynamic" else batch, *net.input_shape, generator=gen)
    check = torch.randn(CHECK_BATCH if batch == "dynamic" else batch, *net.input_shape, generator=gen)
    return example, check


def _compare(fmt: str, expected: torch.Tensor, got: torch.Tensor) -> float:
    if tuple(got.shape) != tuple(expected.shape):
        raise ExportError(f"{fmt} export gives shape {tuple(got.shape)} but the model gives {tuple(expected.shape)}")
    diff = (got.float() - expected.float()).abs().max().item()
    if not diff <= TOLERANCE[fmt]:  # also catches NaN
        raise ExportError(f"{fmt} export differs from the model by {diff:.3g} (more than {TOLERANCE[fmt]:g})")
    return diff


def _dynamic_batch(batch: int | str) -> tuple[dict[int, Any]] | None:
    return ({0: torch.export.Dim("batch", min=1, max=1 << 20)},) if batch == "dynamic" else None


def _first_failing_layer(net: NetShape, attempt: Callable[[nn.Module, torch.Tensor], None]) -> str:
    """Which layer an exporter fails on, found by exporting each layer alone: 'layers[3] upsample: reason'."""
    for info in net.layers:
        if info.is_merge:
            continue
        try:
            attempt(info.layer.build(info.input_shape).eval(), torch.randn(EXAMPLE_BATCH, *info.input_shape))
        except Exception as exc:
            return f"{info.path} {info.kind}: {_first_line(exc)}"
    return ""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress, warnings and IR dumps of their own (some from C++, straight to the
    file descriptors); a user sees only netspec's one line."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    for tail in (" Please feel free", "  [Caused by"):  # the exporters' boilerplate
        text = text.split(tail)[0]
    return text[:300]


def _fail(fmt: str, net: NetShape, exc: Exception, attempt: Callable[[nn.Module, torch.Tensor], None]) -> ExportError:
    layer = _first_failing_layer(net, attempt)
    where = f" at {layer}" if layer else f": {_first_line(exc)}"
    return ExportError(f"cannot export {net.name} to {fmt}{where}")


# --- ONNX ------------------------------------------------------------------------------------


def _onnx_opset(data: bytes) -> int:
    import onnx

    return next(o.version for o in onnx.load_from_string(data).opset_import if o.domain in ("", "ai.onnx"))


def _onnx_bytes(model: nn.Module, example: torch.Tensor, batch: int | str, opset: int | None) -> tuple[bytes, str]:
    """The ONNX file from the dynamo exporter, or from the TorchScript one where dynamo fails or cannot
    give the opset asked for."""
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        file = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(
                model,
                (example,),
                str(file),
                dynamo=True,
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes=_dynamic_batch(batch),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
            data = file.read_bytes()
            if opset is None or _onnx_opset(data) == opset:
                return data, "dynamo"
        except Exception:
            pass
        torch.onnx.export(
            model,
            (example,),
            str(file),
            dynamo=False,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if batch == "dynamic" else None,
            opset_version=opset,
        )
        return file.read_bytes(), "torchscript"


def _export_onnx(job: _Job) -> ExportResult:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise UsageError("ONNX export needs onnx and onnxruntime: pip install -e '.[export]'") from None
    net, model, batch, opset = job.net, job.exported, job.batch, job.opset
    example, check = job.inputs()
    try:
        data, exporter = _onnx_bytes(model, example, batch, opset)
    except Exception as exc:
        raise _fail("onnx", net, exc, lambda m, x: _onnx_bytes(m, x, "dynamic", opset)) from None
    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
        if job.pre is not None:  # what a reader of the file needs to feed it and read its output
            onnx.helper.set_model_props(proto, _metadata(job))
            data = proto.SerializeToString()
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        with _quiet():
            session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            (got,) = session.run(["output"], {"input": check.numpy()})
    except Exception as exc:
        raise ExportError(
            f"the ONNX file of {net.name} (opset {_onnx_opset(data)}) does not run in onnxruntime: {_first_line(exc)}"
        ) from None
    with torch.no_grad():
        expected = model(check)
    diff = _compare("onnx", expected, torch.from_numpy(got))
    atomic_write_bytes(job.path, data)
    notes = [f"opset {_onnx_opset(data)}", f"{exporter} exporter", "checked in onnxruntime", *_input_note(job)]
    return ExportResult("onnx", job.path, diff, len(check), notes=notes)


def _metadata(job: _Job) -> dict[str, str]:
    import json

    pre = job.pre
    assert pre is not None
    # Regression's outputs are standardized: the metadata says how to bring them back to the targets' units.
    target = {
        "netspec_target_mean": json.dumps(list(pre.target_mean)),
        "netspec_target_std": json.dumps(list(pre.target_std)),
    }
    target = target if pre.target_std else {}
    return {
        "netspec_input": pre.describe() if job.preprocess else "normalized with mean and std",
        "netspec_mean": json.dumps(list(pre.mean)),
        "netspec_std": json.dumps(list(pre.std)),
        "netspec_classes": json.dumps(list(pre.classes)),
        "netspec_task": pre.task,
        **target,
    }


def _input_note(job: _Job) -> list[str]:
    if job.pre is None:
        return []
    return [f"input: {job.pre.describe()}" if job.preprocess else "input: normalized as in training"]


# --- torch.export ----------------------------------------------------------------------------


def _pt2_program(model: nn.Module, example: torch.Tensor, batch: int | str) -> Any:
    with _quiet():
        return torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch(batch))


def _export_pt2(job: _Job) -> ExportResult:
    net, model, batch = job.net, job.exported, job.batch
    example, check = job.inputs()
    try:
        program = _pt2_program(model, example, batch)
    except Exception as exc:
        raise _fail("pt2", net, exc, lambda m, x: _pt2_program(m, x, "dynamic")) from None
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "model.pt2"
        torch.export.save(program, str(file))
        data = file.read_bytes()
        reloaded = torch.export.load(str(file)).module()
    with torch.no_grad():
        diff = _compare("pt2", model(check), reloaded(check))
    atomic_write_bytes(job.path, data)
    notes = ["reloaded with torch.export.load", *_input_note(job)]
    return ExportResult("pt2", job.path, diff, len(check), notes=notes)


# --- plain PyTorch ---------------------------------------------------------------------------


def python_source(
    net: NetShape,
    weights_file: str | None = None,
    source_file: str | None = None,
    pre: Preprocessing | None = None,
) -> str:
    """A self-contained module (torch, and torchvision where a layer is torchvision's) with one class per block
    and one for the network, written as a person would (see netspec.codegen); with the training run's input
    normalization, its MEAN, STD, CLASSES and a `preprocess` function."""
    from netspec import __version__

    classes, helpers, imports, name = write_classes(net)
    load = (
        f'model.load_state_dict(torch.load("{weights_file}", weights_only=True))'
        if weights_file
        else 'model.load_state_dict(torch.load("runs/<run>/best.pt", weights_only=True)["model"])  # a netspec run'
    )
    description = f"{net.spec.description}\n\n" if net.spec.description else ""
    helper_code = "\n\n\n".join(source.rstrip() for source in helpers.values())
    uses_functional = "F." in helper_code
    if pre is None:
        expects = "It expects inputs normalized as the data it was trained on."
    elif pre.kind == "image":
        expects = (
            "It expects images normalized as in training: (pixel / 255 - MEAN) / STD per channel; "
            "`preprocess(images)` does it."
        )
    else:
        expects = (
            "It expects rows standardized as in training: (x - MEAN) / STD per feature; `preprocess(rows)` does it."
        )
    outputs = task_named(pre.task).export_note() if pre is not None else ""
    lines = [
        f'"""{net.name}: generated by netspec {__version__} from {source_file or "a spec"}.',
        "",
        f"{description}Input {format_shape(net.input_shape)} (without the batch), output "
        f"{format_shape(net.output_shape)}; {net.total_params:,} parameters. {expects}{outputs}",
        "Its state_dict keys are netspec's, so the weights of a netspec checkpoint load directly:",
        "",
        f"    model = {name}()",
        f"    {load}",
        '"""',
        "",
        "import torch",
        *(["import torch.nn.functional as F"] if uses_functional else []),
        "from torch import nn",
        *(f"from {module} import {', '.join(sorted(names))}" for module, names in sorted(imports.items())),
        "",
    ]
    if pre is not None:
        view = "(1, -1, 1, 1)" if pre.kind == "image" else "(1, -1)"
        scaled = "inputs.float() / 255" if pre.kind == "image" else "inputs.float()"
        what = "Images N×C×H×W with pixel values 0..255 (uint8 or float)" if pre.kind == "image" else "Rows N×F"
        lines += [
            f"CLASSES = {list(pre.classes)!r}".replace("'", '"'),
            f"MEAN = {pre.mean!r}",
            f"STD = {pre.std!r}",
            *([f'TASK = "{pre.task}"'] if outputs else []),  # (a classifier's file is as it was)
            *([f"TARGET_MEAN = {pre.target_mean!r}", f"TARGET_STD = {pre.target_std!r}"] if pre.target_std else []),
            "",
            "",
            "def preprocess(inputs: torch.Tensor) -> torch.Tensor:",
            f'    """{what}, normalized as in training."""',
            f"    mean = torch.tensor(MEAN).view{view}",
            f"    std = torch.tensor(STD).view{view}",
            f"    return ({scaled} - mean) / std",
            "",
        ]
    lines.append("")
    if helper_code:
        lines += [helper_code, "", ""]
    lines += [
        *classes,
        "",
        "",
        'if __name__ == "__main__":',
        f"    model = {name}().eval()",
        f"    print(model(torch.randn(2, {', '.join(map(str, net.input_shape))})).shape)",
        "",
    ]
    return "\n".join(lines)


def load_python_module(path: Path) -> Any:
    """Import a generated file as a module (for checking it)."""
    import importlib.machinery
    import importlib.util

    name = f"netspec_export_{abs(hash(str(path)))}"
    loader = importlib.machinery.SourceFileLoader(name, str(path))  # whatever the file's suffix
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _export_python(job: _Job) -> ExportResult:
    net, model, path = job.net, job.model, job.path
    weights_path = path.with_suffix(".pt") if job.checkpoint is not None else None
    code = python_source(net, weights_path.name if weights_path else None, net.spec.source.file, job.pre)
    _, check = _inputs(net, job.batch)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / f"{net.name}.py"
        file.write_text(code)
        try:
            generated = getattr(load_python_module(file), class_name(net.name))()
            generated.load_state_dict(model.state_dict(), strict=True)
        except Exception as exc:  # a bug in the writer; say so plainly
            raise ExportError(f"the generated Python for {net.name} does not load: {_first_line(exc)}") from None
    generated.eval()
    with torch.no_grad():
        diff = _compare("python", model(check), generated(check))
    atomic_write_text(path, code)
    if weights_path is not None:
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic_write_bytes(weights_path, buffer.getvalue())
    imports = "imports torch and torchvision" if "from torchvision" in code else "imports only torch"
    return ExportResult("python", path, diff, len(check), weights_path, notes=[imports])
