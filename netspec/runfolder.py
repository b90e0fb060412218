"""Output folders that are never overwritten by accident.

A run folder (train) or sweep folder is claimed before anything is written to it: one process at a time holds
it (an advisory lock the operating system drops when the process ends, so a kill leaves no stale lock), and a
folder that already holds a run is refused unless the command says `--resume` (continue it) or `--overwrite`
(replace it). Only folders that hold netspec's own files are ever replaced.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from netspec.errors import UsageError
from netspec.fileio import ensure_writable_dir

LOCK_FILE = ".netspec.lock"
# The files by which a folder is recognised as netspec's: what train and sweep write first.
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "metrics.json", "spec.yaml", "data.json", "split.json")
SWEEP_FILES = ("sweep.json", "study.db", "results.json", "results.csv")
Kind = Literal["run", "sweep"]


@dataclass
class Claim:
    """A folder this process writes to; the lock is held until `release` (or the process ends)."""

    path: Path
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def free_name(path: Path) -> Path:
    """The first of `path-2`, `path-3`, ... that does not exist."""
    n = 2
    while (candidate := path.with_name(f"{path.name}-{n}")).exists():
        n += 1
    return candidate


def holds(path: Path, kind: Kind) -> bool:
    names = RUN_FILES if kind == "run" else SWEEP_FILES
    return path.is_dir() and any((path / name).exists() for name in names)


def describe(path: Path, kind: Kind) -> str:
    """What the folder holds, in a few words: 'a finished run (30 of 30 epochs)', 'an interrupted run (3 of 10
    epochs)', 'a sweep of 4 trials'."""
    if kind == "sweep":
        try:
            rows = json.loads((path / "results.json").read_text()).get("trials", [])
            return f"a sweep ({len(rows)} trial{'s' if len(rows) != 1 else ''} recorded)"
        except (OSError, ValueError, AttributeError):
            return "a sweep"
    try:
        done = len(json.loads((path / "metrics.json").read_text()))
    except (OSError, ValueError, TypeError):
        done = 0
    planned = _planned_epochs(path / "spec.yaml")
    if planned is None:
        return f"a run ({done} epoch{'s' if done != 1 else ''} recorded)"
    return f"{'a finished' if done >= planned else 'an unfinished'} run ({done} of {planned} epochs)"


def _planned_epochs(spec_file: Path) -> int | None:
    import yaml

    try:
        data = yaml.safe_load(spec_file.read_text())
        return int(data["train"]["epochs"])
    except Exception:  # any unreadable or partial spec: the description just leaves the plan out
        return None


def refusal(path: Path, kind: Kind) -> str:
    """The message for an --out that already holds a run or sweep: what it holds and the three ways on."""
    held = describe(path, kind)
    on = f"`netspec {'train' if kind == 'run' else 'sweep'} --resume {path}`"
    if held.startswith("a finished run"):
        on = f"extend it with `netspec train --resume {path} --epochs N`"
    else:
        on = f"continue it with {on}"
    return (
        f"--out {path} already holds {held}; nothing was changed. {on[0].upper()}{on[1:]}, write to a new folder "
        f"(--out {free_name(path)} is free), or pass --overwrite to replace it"
    )


def _lock(path: Path) -> int:
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.read(fd, 64).decode(errors="replace").strip()
        finally:
            os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise UsageError(
            f"{path} is in use by another netspec process{who}; wait for it to finish, or write to another folder"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def check_new(path: str | Path, kind: Kind, *, overwrite: bool = False) -> list[Path]:
    """Refuse an --out that holds a run (without `overwrite`) or files that are not netspec's; returns the entries
    that `overwrite` replaces. Called before any work starts, and again under the lock."""
    path = Path(path)
    entries = [p for p in path.iterdir() if p.name != LOCK_FILE] if path.is_dir() else []
    if entries and not holds(path, kind):
        raise UsageError(
            f"--out {path} is not empty and holds no netspec {kind} ({entries[0].name}, ...); nothing was changed. "
            f"Choose a new folder (--out {free_name(path)} is free)"
        )
    if entries and not overwrite:
        raise UsageError(refusal(path, kind))
    return entries


def claim(path: str | Path, kind: Kind, *, overwrite: bool = False, existing: bool = False) -> Claim:
    """Lock `path` for this process and make sure writing to it loses nothing.

    `existing=True` (resume) takes a folder that holds a run as it is. Otherwise the folder must be new, empty,
    or (with `overwrite`) one of netspec's own, whose files are then removed. Anything else is refused.
    """
    path = ensure_writable_dir(Path(path))
    fd = _lock(path)
    try:
        for entry in [] if existing else check_new(path, kind, overwrite=overwrite):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    except BaseException:
        os.close(fd)
        raise
    return Claim(path, fd)
