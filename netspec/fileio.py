"""Atomic file writes and safe checkpoint loading.

Every file netspec writes goes to a temporary file in the same folder first and is
then renamed over the target, so a crash or a kill never leaves a half-written file.
Checkpoints are loaded with `torch.load(weights_only=True)`: a checkpoint can hold
tensors and plain data, never code.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from netspec.errors import CheckpointError, MissingCheckpointError, NetspecError

CHECKPOINT_FORMAT = "netspec-checkpoint"
_UMASK = os.umask(0)
os.umask(_UMASK)


class WriteError(NetspecError):
    """A file could not be written (disk full, no permission, a read-only file system); the old file, if any,
    is untouched."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror}") from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(
            f"cannot write {path} ({len(data):,} bytes): {exc.strerror}; "
            + ("free some disk space and run again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "nothing was changed")
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def save_checkpoint(paths: Path | list[Path], checkpoint: dict[str, Any]) -> None:
    """Serialize once and write atomically to each path (e.g. last.pt and best.pt)."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **checkpoint}, buffer)
    for path in paths if isinstance(paths, list) else [paths]:
        atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", allow_plain: bool = False
) -> dict[str, Any]:
    """Load a netspec checkpoint safely, with one clear error for every way it can be bad. With `allow_plain`,
    any dict that torch.load reads with weights_only=True (a state_dict saved by PyTorch) is returned too."""
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the blocked global ("unsupported GLOBAL os.system"); anything else is not a pickle of ours.
        if "GLOBAL" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(f"{path}: refused to load: it refers to Python objects or code") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupted, truncated or another format)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupted or truncated: {exc})") from None
    if allow_plain and isinstance(checkpoint, dict):
        return checkpoint
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a netspec checkpoint")
    return checkpoint


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` (and parents); fail with a clear message if it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        raise NetspecError(f"cannot write to {path}: {exc.strerror}") from None
    return path
