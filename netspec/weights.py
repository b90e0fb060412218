"""A network's weights before training: their initialization, weights to start from (`--init-from`: a netspec
checkpoint, a PyTorch state_dict file, or a library's pretrained weights, `torchvision:NAME` and `timm:NAME`), and
the parameters kept fixed (`freeze`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from netspec.compiler import transfer_state_dict, unmatched_tensors
from netspec.config import TrainConfig
from netspec.errors import CheckpointError, UsageError
from netspec.fileio import load_checkpoint
from netspec.layers import format_shape


def init_weights(model: nn.Module, scheme: str) -> None:
    """xavier_uniform (as d2l's train_ch6), kaiming, or torch's default initialization."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if scheme == "xavier_uniform":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


def start_from(model: nn.Module, cfg: TrainConfig) -> str:
    """Load cfg.init_from into `model`: a netspec checkpoint (its `model`), a PyTorch state_dict file, or a library's
    pretrained weights (`torchvision:NAME`, `timm:NAME`), matched by name when the names agree and by position
    otherwise (as torchvision's weights load into the zoo's specs). A partial load is refused unless
    cfg.skip_mismatched, which keeps the tensors that do not fit (a new head) at their initialization."""
    source = str(cfg.init_from)
    if source.startswith(("torchvision:", "timm:")):
        state, label = pretrained_state(source, download=cfg.download)
    else:
        path = Path(source)
        if not path.is_file():
            raise UsageError(
                f"--init-from {path}: no such file"
                + ("" if path.exists() else " (or give torchvision:NAME or timm:NAME for a library's weights)")
            )
        loaded = load_checkpoint(path, allow_plain=True)
        state = loaded.get("model", loaded) if isinstance(loaded, dict) else None
        if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"--init-from {path}: neither a netspec checkpoint nor a state_dict of tensors")
        label = str(path)
    target = model.state_dict()
    if list(state) == list(target) or set(state) == set(target):
        pairs = [(key, state[key], key) for key in target]
    elif len(state) == len(target):
        pairs = [(src, tensor, dst) for (src, tensor), dst in zip(state.items(), target, strict=True)]
    elif cfg.skip_mismatched:
        pairs = [(src, tensor, dst) for (src, tensor), dst in zip(state.items(), target, strict=False)]
    else:
        raise UsageError(
            f"--init-from {label}: it holds {len(state)} tensors but the network has {len(target)}, so it is "
            f"another architecture ({unmatched_tensors(state, target, 'the file', 'the network')}); pass "
            "--skip-mismatched to load the leading tensors that fit (the rest keep their initialization)"
        )
    fitting = {dst: tensor for src, tensor, dst in pairs if tensor.shape == target[dst].shape}
    skipped = [
        f"{dst} ({format_shape(tuple(tensor.shape))} in the file, {format_shape(tuple(target[dst].shape))} here)"
        for src, tensor, dst in pairs
        if tensor.shape != target[dst].shape
    ]
    if skipped and not cfg.skip_mismatched:
        shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        raise UsageError(
            f"--init-from {label}: {len(skipped)} of {len(target)} tensor(s) do not fit: {shown}. Pass "
            "--skip-mismatched to keep them at their initialization (for a new head)"
        )
    if len(pairs) == len(target) and not skipped and list(state) != list(target) and set(state) != set(target):
        transfer_state_dict(state, model)  # by position, with torchvision's reordered modules handled
    else:
        model.load_state_dict({**target, **fitting})
    # Every tensor of the network is either loaded, skipped (another shape) or beyond the file's tensors.
    beyond = len(target) - len(pairs)
    note = f"init from {label}: loaded {len(fitting)} of {len(target)} tensors"
    if skipped:
        names = ", ".join(s.split(" (")[0] for s in skipped[:4]) + (", ..." if len(skipped) > 4 else "")
        note += f"; skipped {len(skipped)} that do not fit: {names}"
    if beyond:
        note += f"; {beyond} beyond the file's {len(state)} tensors"
    if skipped or beyond:
        note += " (kept at their initialization)"
    if len(state) > len(pairs):
        note += f"; {len(state) - len(pairs)} of the file's {len(state)} tensors unused"
    return note


def pretrained_state(source: str, download: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict of `torchvision:NAME[.WEIGHTS]` or `timm:NAME`, through the library's own API and cache
    (torch.hub's under TORCH_HOME, Hugging Face's for timm). A file missing from the cache is fetched only with
    `download`; otherwise the error says where the library looks for it and where it comes from."""
    library, _, name = source.partition(":")
    if library == "timm":
        return _timm_state(name, download), source
    import difflib
    import os
    from urllib.parse import urlparse

    import torchvision

    model_name, _, tag = name.partition(".")
    known = torchvision.models.list_models()
    if model_name not in known:
        close = difflib.get_close_matches(model_name, known, n=1)
        hint = f"; did you mean torchvision:{close[0]}?" if close else ""
        raise UsageError(f"--init-from {source}: torchvision has no model named {model_name!r}{hint}")
    enum = torchvision.models.get_model_weights(model_name)
    if tag and tag not in enum.__members__:
        raise UsageError(
            f"--init-from {source}: torchvision's {model_name} has weights "
            f"{', '.join(m for m in enum.__members__ if m != 'DEFAULT')}, not {tag}"
        )
    weights = enum[tag] if tag else enum.DEFAULT
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    label = f"torchvision:{model_name}.{weights.name}"
    if not file.is_file() and not download:
        raise UsageError(
            f"--init-from {source}: the weights {weights} are not in torch.hub's cache: {file} (set TORCH_HOME to "
            f"use another cache); pass --download to fetch them from {weights.url}, or place that file there"
        )
    try:
        state = weights.get_state_dict(progress=False, check_hash=False, weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:  # no network, a truncated or foreign file
        raise CheckpointError(
            f"--init-from {source}: cannot read {file} (from {weights.url}): {type(exc).__name__}: {exc}"
        ) from None
    return dict(state), label


def _timm_state(name: str, download: bool) -> dict[str, torch.Tensor]:
    try:
        import timm
    except ImportError:
        raise UsageError(f"--init-from timm:{name}: timm is not installed (pip install timm)") from None
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f"; did you mean timm:{close[0]}?" if close else ""
        raise UsageError(f"--init-from timm:{name}: timm has no model named {name!r}{hint}")
    import os
    import types

    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:  # timm without the hub: its weights come from elsewhere
        hub_constants = types.SimpleNamespace(HF_HUB_OFFLINE=False, HF_HUB_CACHE="~/.cache/huggingface/hub")
    offline = {} if download else {"HF_HUB_OFFLINE": "1"}
    saved = {key: os.environ.get(key) for key in offline}
    os.environ.update(offline)
    was_offline = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = was_offline or not download  # read when a file is fetched
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as exc:  # timm and huggingface_hub raise many kinds for a file not in the cache
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UsageError(
            f"--init-from timm:{name}: timm could not load its pretrained weights from the Hugging Face cache "
            f"{hub_constants.HF_HUB_CACHE} ({type(exc).__name__}: {first})"
            + ("" if download else "; pass --download to fetch them")
        ) from None
    finally:
        hub_constants.HF_HUB_OFFLINE = was_offline
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return dict(model.state_dict())


def freeze(model: nn.Module, prefixes: list[str]) -> int:
    """Keep the parameters under each prefix (a state_dict key prefix, e.g. `features` or `stem.0`) fixed;
    returns how many parameters stay trainable."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        matched = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        if not matched:
            tops = sorted({n.split(".")[0] for n in names})
            raise UsageError(
                f"freeze: no parameters under {prefix!r}; the network's top-level names: {', '.join(tops)}"
            )
        for name, param in model.named_parameters():
            if name in matched:
                param.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
