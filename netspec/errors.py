"""Errors that netspec reports to users as one clear message (never a traceback).

Each error class carries the CLI exit code it maps to: 2 for an invalid spec or
invalid arguments, 1 for everything else.
"""

from __future__ import annotations


class NetspecError(Exception):
    """Base class of every error netspec reports to a user."""

    exit_code = 1


class SpecError(NetspecError):
    """An invalid spec: says where (file:line:col, layer path and kind) and what."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        where: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        prefix = ""
        if self.file is not None:
            prefix = self.file
            if self.line is not None:
                prefix += f":{self.line}:{self.column}"
            prefix += ": "
        if self.where:
            prefix += f"{self.where}: "
        return prefix + self.message


class UsageError(NetspecError):
    """Invalid command-line arguments or an impossible combination of settings."""

    exit_code = 2


class DataError(NetspecError):
    """A dataset that cannot be found or read."""


class BadDataError(DataError):
    """The user's own data (an image folder or a table) cannot be used as it is: a bad cell, a missing
    column, an empty class folder, a corrupt image. Like a bad spec, it is the input's fault: exit 2."""

    exit_code = 2


class MissingDataError(DataError):
    """A dataset's files are not where the user pointed (--data-root): the input's fault, exit 2."""

    exit_code = 2


class CheckpointError(NetspecError):
    """A checkpoint that cannot be read, or one that is not a netspec checkpoint."""


class MissingCheckpointError(CheckpointError):
    """No checkpoint where the user pointed (a missing file, a folder without best.pt or last.pt): exit 2."""

    exit_code = 2


class TrainingDiverged(NetspecError):
    """The loss became NaN or infinite."""


class Interrupted(NetspecError):
    """Training was stopped by SIGINT/SIGTERM after saving a checkpoint."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a training loop (which saves and stops by itself): stop as Ctrl-C does, with a word."""


class SpecWarning(UserWarning):
    """A valid spec that is probably not what its author meant (a linear right after a convolution).

    `infer_shapes` issues each through Python's `warnings` (the command line prints each once on stderr,
    as `warning: ...`) and lists them in `NetShape.warnings`."""
