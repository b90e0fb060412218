"""Output folders that are never overwritten by accident.

A run folder (train) or sweep folder is claimed before anything is written to it: one process at a time holds
it (an advisory flock on the folder, which the operating system drops when the process ends, so a kill leaves no
stale lock and no lock file), and a
folder that already holds a run is refused unless the command says `--resume` (continue it) or `--overwrite`
(replace it). `--overwrite` removes only the names netspec writes (WRITES); a user's other files stay.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from netspec.errors import UsageError
from netspec.fileio import ensure_writable_dir

Kind = Literal["run", "sweep"]
# Every name a run or a sweep writes in its folder (glob patterns): `--overwrite` removes these and nothing else.
WRITES: dict[str, tuple[str, ...]] = {
    "run": ("spec.yaml", "data.json", "split.json", "metrics.csv", "metrics.json", "last.pt", "best.pt",
            "curves.png", "confusion.png", "events.out.tfevents.*", ".*.tmp"),
    "sweep": ("sweep.json", "study.db", "study.db-*", "results.json", "results.csv", "curves.png", "gap.png",
              "heatmap.png", "importance.png", "parallel.png", "trials", ".*.tmp"),
}  # fmt: skip
# The names by which a folder is recognised as holding a run or a sweep (written as it starts).
MARKERS: dict[str, tuple[str, ...]] = {
    "run": ("last.pt", "best.pt", "metrics.json", "metrics.csv", "data.json", "split.json"),
    "sweep": ("sweep.json", "study.db", "results.json"),
}


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
    path = path if path.name else path.resolve()  # `.` has no name to number
    n = 2
    while (candidate := path.with_name(f"{path.name}-{n}")).exists():
        n += 1
    return candidate


def holds(path: Path, kind: Kind) -> bool:
    return path.is_dir() and any((path / name).exists() for name in MARKERS[kind])


def written_by_netspec(path: Path, kind: Kind) -> list[Path]:
    """The entries of `path` that a run (or sweep) writes: what it would replace, and what --overwrite removes."""
    if not path.is_dir():
        return []
    return [entry for entry in path.iterdir() if any(fnmatch.fnmatchcase(entry.name, p) for p in WRITES[kind])]


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
    """flock the folder itself (no lock file to leave behind or go stale)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"{path} is in use by another netspec process; wait for it to finish, or write to another folder"
        ) from None
    return fd


def check_new(path: str | Path, kind: Kind, *, overwrite: bool = False) -> list[Path]:
    """Refuse an --out that holds a run (or sweep), or a file the new one would write over, unless `overwrite`;
    returns the entries `overwrite` removes (netspec's own: anything else in the folder stays). Called before any
    work starts, and again under the lock."""
    path = Path(path)
    ours = written_by_netspec(path, kind)
    if holds(path, kind) and not overwrite:
        raise UsageError(refusal(path, kind))
    if ours and not overwrite:
        raise UsageError(
            f"--out {path} holds {ours[0].name}, which the {kind} would write over; nothing was changed. Choose a "
            f"new folder (--out {free_name(path)} is free), or pass --overwrite to replace it"
        )
    return ours


def claim(path: str | Path, kind: Kind, *, overwrite: bool = False, existing: bool = False) -> Claim:
    """Lock `path` for this process and make sure writing to it loses nothing.

    `existing=True` (resume) takes a folder that holds a run as it is. Otherwise the folder must hold no run and
    nothing the run would write over, or (with `overwrite`) those files are removed first; files that netspec
    does not write are never touched.
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
