"""CSV tables: a header row, one example per row, a label column (the last, or --label NAME; several, --label
a,b,c, for regression targets or multi-label columns) and numeric features in every other column. Classes may be
names (strings) or numbers (1 and 1.0 are one class); what the label cells mean is the task's (netspec.tasks).
A column named `split` with train / val / test values (also valid, validation) assigns rows to splits; without
it netspec makes the splits.

The separator is a tab for .tsv (and .tab) files, otherwise whichever of `,` `;` tab and `|` the header row uses
most (with `;`, a decimal comma is read too: 5,1 is 5.1). Files are read as UTF-8; a file that is not UTF-8 is
read as Latin-1, and a note says so.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from pathlib import Path

import torch

from netspec.data.base import SPLIT_NAMES, SPLITS, UNASSIGNED, Examples, Pool
from netspec.errors import BadDataError, DataError
from netspec.tasks import task_named

SPLIT_COLUMN = "split"
DELIMITERS = (",", ";", "\t", "|")


class _Text:
    """A table file's text, decoded, with its separator and what was noted while reading it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notes: list[str] = []
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
        if b"\x00" in data[:65536]:
            raise BadDataError(f"{path}: not a text table (it holds binary data); a table is a CSV text file")
        try:
            self.text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            self.text = data.decode("latin-1")
            self.notes.append(
                f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); the file was read as Latin-1"
            )
        first = self.text.split("\n", 1)[0]
        if path.suffix.lower() in (".tsv", ".tab"):
            self.delimiter = "\t"
        else:
            self.delimiter = max(DELIMITERS, key=lambda d: (first.count(d), d == ","))

    def reader(self):
        return csv.reader(io.StringIO(self.text, newline=""), delimiter=self.delimiter)

    def rows(self):
        """(line number, cells) of every row after the header that is not blank."""
        reader = self.reader()
        try:
            next(reader, None)
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    yield reader.line_num, row
        except csv.Error as exc:
            line = reader.line_num
            if "field larger" in str(exc):
                raise BadDataError(
                    f"{self.path}:{line}: a cell of more than {csv.field_size_limit():,} characters; a table's cells "
                    "are numbers and class names"
                ) from None
            raise BadDataError(f"{self.path}:{line}: not a readable CSV row ({exc})") from None

    def number(self, line: int, column: str, cell: str) -> float:
        return _number(self.path, line, column, cell, decimal_comma=self.delimiter == ";")


def _text(path: Path) -> _Text:
    """The file's _Text, read once for the header, the columns and the rows (kept while the file is unchanged)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
    return _read_text(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_text(path: Path, size: int, mtime_ns: int) -> _Text:
    return _Text(path)


def _header(text: _Text) -> list[str]:
    try:
        header = next(text.reader(), None)
    except csv.Error as exc:
        raise BadDataError(f"{text.path}:1: not a readable header row ({exc})") from None
    if not header or not any(h.strip() for h in header):
        raise BadDataError(f"{text.path}:1: the file has no header row (the first row names the columns)")
    return [h.strip() for h in header]


def read_header(path: Path) -> list[str]:
    return _header(_text(path))


def table_columns(path: Path, label: str | None) -> tuple[list[str], list[str]]:
    """(feature columns, label columns) of a table, checked."""
    return _columns(path, read_header(path), label)


def _columns(path: Path, header: list[str], label: str | None) -> tuple[list[str], list[str]]:
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise BadDataError(f"{path}:1: column name {duplicated[0]!r} is used twice")
    labels = [name.strip() for name in label.split(",")] if label is not None else []
    if not labels:
        labels = [next(h for h in reversed(header) if h != SPLIT_COLUMN)]
    for name in labels:
        if name not in header:
            from difflib import get_close_matches

            close = get_close_matches(name, header, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadDataError(f"{path}:1: no column {name!r}{hint}; its columns: {', '.join(header)}")
    features = [h for h in header if h not in labels and h != SPLIT_COLUMN]
    if not features:
        which = f"the label column {labels[0]!r}" if len(labels) == 1 else f"the label columns {', '.join(labels)}"
        raise BadDataError(f"{path}:1: no feature columns besides {which}")
    return features, labels


def read_table(path: str | Path, label: str | None = None, task: str | None = None) -> Pool:
    """Every row of a CSV table: float32 features, its targets as `task` reads them (netspec.tasks; None:
    classification, refusing a label column that looks like a measurement), and its split if it names one."""
    path = Path(path)
    if not path.is_file():
        raise BadDataError(f"{path}: no such file")
    text = _text(path)
    header = _header(text)
    features, labels = _columns(path, header, label)
    feature_at = [header.index(f) for f in features]
    label_at = [header.index(name) for name in labels]
    split_at = header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header else None
    rows: list[list[float]] = []
    label_cells: list[list[str]] = []
    lines: list[int] = []
    given: list[int] = []
    ids: list[str] = []
    for line, row in text.rows():
        if len(row) != len(header):
            raise BadDataError(f"{path}:{line}: {len(row)} cells, but the header names {len(header)} columns")
        rows.append([text.number(line, header[i], row[i]) for i in feature_at])
        label_cells.append([row[i].strip() for i in label_at])
        lines.append(line)
        given.append(_split_of(path, line, row[split_at]) if split_at is not None else UNASSIGNED)
        ids.append(f"{path.name}:{line}")
    if not rows:
        raise BadDataError(f"{path}: the table has a header but no rows")
    if split_at is not None and not any(g == SPLITS.index("train") for g in given):
        counts = ", ".join(f"{given.count(SPLITS.index(s))} {s}" for s in ("val", "test") if SPLITS.index(s) in given)
        raise BadDataError(
            f"{path}: column 'split' puts no row in train ({counts}); mark the training rows train, or remove "
            "the column and netspec makes the splits"
        )
    classes, targets = task_named(task).read_targets(path, labels, label_cells, lines, explicit=task is not None)
    notes = list(text.notes)
    if targets.dtype == torch.long and len({cells[0] for cells in label_cells}) > len(classes):
        notes.append(f"{path}: labels written differently but equal as numbers (such as 1 and 1.0) are one class")
    examples = Examples(torch.tensor(rows, dtype=torch.float32), targets)
    _read_text.cache_clear()  # the rows are read: keep no copy of the file's text
    return Pool(examples, classes, torch.tensor(given, dtype=torch.int8), ids, notes)


def _number(path: Path, line: int, column: str, cell: str, decimal_comma: bool = False) -> float:
    if not cell.strip():
        raise BadDataError(
            f"{path}:{line}: column {column!r}: the cell is empty (row {line - 1} of the table; every feature needs "
            "a value: fill it in or remove the row)"
        )
    try:
        value = float(cell)
    except ValueError:
        try:
            if not decimal_comma or cell.count(",") != 1:
                raise
            value = float(cell.replace(",", "."))
        except ValueError:
            shown = cell if len(cell) <= 30 else cell[:27] + "..."
            raise BadDataError(
                f"{path}:{line}: column {column!r}: {shown!r} is not a number (every column but "
                "the label is a numeric feature; name the label column with --label)"
            ) from None
    if not math.isfinite(value):
        raise BadDataError(f"{path}:{line}: column {column!r}: {cell.strip()!r} is not a finite number")
    return value


def _split_of(path: Path, line: int, cell: str) -> int:
    name = SPLIT_NAMES.get(cell.strip().lower())
    if name is None:
        raise BadDataError(f"{path}:{line}: column 'split': {cell!r} is not train, val or test")
    return SPLITS.index(name)


def read_rows(path: Path, features: list[str], notes: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """The feature columns of a table to predict on (its label column, if any, is ignored): rows and their ids.
    What was noted while reading it (a file read as Latin-1) is added to `notes`."""
    text = _text(path)
    header = _header(text)
    missing = [f for f in features if f not in header]
    if missing:
        raise BadDataError(
            f"{path}:1: missing the feature column(s) {', '.join(missing)} that the model was trained on"
        )
    at = [header.index(f) for f in features]
    rows, ids = [], []
    for line, row in text.rows():
        if len(row) != len(header):
            raise BadDataError(f"{path}:{line}: {len(row)} cells, but the header names {len(header)} columns")
        rows.append([text.number(line, header[i], row[i]) for i in at])
        ids.append(f"{path.name}:{line}")
    if not rows:
        raise BadDataError(f"{path}: the table has a header but no rows to classify")
    if notes is not None:
        notes += text.notes
    _read_text.cache_clear()
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), len(features)), ids
