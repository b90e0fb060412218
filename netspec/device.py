"""Which torch device a run uses (`auto` or a checked explicit choice), and mixed precision on it."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from netspec.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else is checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device '{name}': CUDA is not available on this machine")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"device '{name}': this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"device '{name}': MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device '{name}' (use auto, cpu, cuda, cuda:N or mps)")
    return device


def autocast(device: torch.device, amp: str) -> AbstractContextManager[object]:
    """Mixed precision for `amp` ("bf16" or "fp16") on `device`, or nothing for "none"."""
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
