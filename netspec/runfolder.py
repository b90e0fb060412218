"""Output folders that are never overwritten by accident.

A run folder (train) or sweep folder is claimed before anything is written to it: one process at a time holds
it (an advisory flock on the folder, which the operating system drops when the process ends, so a kill leaves no
stale lock and no lock file), and a
folder that already holds a run is refused unless the command says `--resume` (continue it) or `--overwrite`
(replace it). `--overwrite` removes only the names netspec writes (WRITES); a user's other files stay.

`RunDir` owns the names of a run folder's files and how each is read and written (atomically, netspec.fileio):
train, predict, export, sweep, distributed and the CLI reach a run's files through it.
"""

from __future__ import annotations

import csv
import fcntl
import fnmatch
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from netspec.errors import CheckpointError, MissingCheckpointError, UsageError
from netspec.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir, load_checkpoint, save_checkpoint

# The files of a run folder.
SPEC = "spec.yaml"  # the resolved spec (its train section as the run uses it)
DATA = "data.json"  # the data's name, classes and normalization, and notes on how it was read
SPLIT = "split.json"  # the indices of the train/val/test split, so a resume and `netspec eval` see the same
LAST = "last.pt"  # the checkpoint of the latest saved state (an interrupted epoch's too)
BEST = "best.pt"  # the checkpoint of the selected epoch
METRICS_JSON = "metrics.json"  # one row per epoch
METRICS_CSV = "metrics.csv"  # the same rows, for spreadsheets
CURVES = "curves.png"
# The picture of the report split (test; validation without it), one per task (tasks.Task.picture_name):
CONFUSION = "confusion.png"  # classification: the normalized confusion matrix
PREDICTED = "predicted.png"  # regression: predicted against true values, per target
LABELS = "labels.png"  # multilabel: each label's F1 and accuracy
MASKS = "masks.png"  # segmentation: a few images with their true and predicted masks

Kind = Literal["run", "sweep"]
# Every name a run or a sweep writes in its folder (glob patterns): `--overwrite` removes these and nothing else.
WRITES: dict[str, tuple[str, ...]] = {
    "run": (SPEC, DATA, SPLIT, METRICS_CSV, METRICS_JSON, LAST, BEST, CURVES, CONFUSION, PREDICTED, LABELS, MASKS,
            "events.out.tfevents.*", ".*.tmp"),
    "sweep": ("sweep.json", "study.db", "study.db-*", "results.json", "results.csv", "curves.png", "gap.png",
              "heatmap.png", "importance.png", "parallel.png", "trials", ".*.tmp"),
}  # fmt: skip
# The names by which a folder is recognised as holding a run or a sweep (written as it starts).
MARKERS: dict[str, tuple[str, ...]] = {
    "run": (LAST, BEST, METRICS_JSON, METRICS_CSV, DATA, SPLIT),
    "sweep": ("sweep.json", "study.db", "results.json"),
}


@dataclass(frozen=True)
class RunDir:
    """A run folder: where each of its files is, and how each is read and written."""

    path: Path

    @property
    def spec_file(self) -> Path:
        return self.path / SPEC

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_JSON

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    @property
    def confusion(self) -> Path:
        return self.path / CONFUSION

    def is_run(self) -> bool:
        """Whether the folder was written by a run (its split or its spec is there)."""
        return (self.path / SPLIT).exists() or self.spec_file.exists()

    def checkpoint(self) -> Path:
        """best.pt, or last.pt for a run without one; MissingCheckpointError without either."""
        for path in (self.best, self.last):
            if path.is_file():
                return path
        raise MissingCheckpointError(
            f"{self.path}: a folder without {BEST} or {LAST} (give a run folder or a checkpoint)"
        )

    def save(self, state: dict[str, Any], best: bool = False) -> Path:
        """last.pt (and best.pt, the same bytes) from `state`; returns last.pt's path."""
        save_checkpoint([self.last, self.best] if best else [self.last], state)
        return self.last

    def load_last(self) -> dict[str, Any]:
        return load_checkpoint(self.last)

    def write_spec(self, spec_data: dict[str, Any]) -> None:
        import yaml

        atomic_write_text(self.spec_file, yaml.safe_dump(spec_data, sort_keys=False))

    def write_data(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.path / DATA, data)

    def write_split(self, split: dict[str, list[int]]) -> None:
        atomic_write_text(self.path / SPLIT, json.dumps(split, separators=(",", ":")) + "\n")

    def read_split(self) -> dict[str, list[int]] | None:
        """The split a run recorded (None for a run of netspec 0.1, which had none)."""
        path = self.path / SPLIT
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            return {name: [int(i) for i in data.get(name, [])] for name in ("train", "val", "test")}
        except (ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: unreadable ({exc})") from None

    def write_metrics(self, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
        """metrics.json and metrics.csv: one row per epoch; a value that was not measured is an empty cell."""
        atomic_write_json(self.metrics_file, rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({k: ("" if row[k] is None else row[k]) for k in columns} for row in rows)
        atomic_write_text(self.path / METRICS_CSV, buffer.getvalue())

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.json; none while it is not written yet (it is replaced atomically, never
        half-written)."""
        try:
            rows = json.loads(self.metrics_file.read_text())
        except (OSError, ValueError):
            return []
        return rows if isinstance(rows, list) else []


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
        done = len(json.loads((path / METRICS_JSON).read_text()))
    except (OSError, ValueError, TypeError):
        done = 0
    planned = _planned_epochs(path / SPEC)
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
