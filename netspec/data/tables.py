"""CSV tables: a header row, one example per row, a label column (the last, or --label NAME) and numeric
features in every other column. Labels may be class names (strings) or integers. A column named `split` with
train / val / test values (also valid, validation) assigns rows to splits; without it netspec makes the splits.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from netspec.data.base import SPLIT_NAMES, SPLITS, UNASSIGNED, Examples, Pool
from netspec.errors import BadDataError, DataError

SPLIT_COLUMN = "split"


def read_header(path: Path) -> list[str]:
    with _open(path) as fh:
        header = next(csv.reader(fh), None)
    if not header or not any(h.strip() for h in header):
        raise BadDataError(f"{path}:1: the file has no header row (the first row names the columns)")
    return [h.strip() for h in header]


def table_columns(path: Path, label: str | None) -> tuple[list[str], str]:
    """(feature columns, label column) of a table, checked."""
    header = read_header(path)
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise BadDataError(f"{path}:1: column name {duplicated[0]!r} is used twice")
    if label is None:
        label = next(h for h in reversed(header) if h != SPLIT_COLUMN)
    elif label not in header:
        from difflib import get_close_matches

        close = get_close_matches(label, header, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BadDataError(f"{path}:1: no column {label!r}{hint}; its columns: {', '.join(header)}")
    features = [h for h in header if h not in (label, SPLIT_COLUMN)]
    if not features:
        raise BadDataError(f"{path}:1: no feature columns besides the label column {label!r}")
    return features, label


def read_table(path: str | Path, label: str | None = None) -> Pool:
    """Every row of a CSV table: float32 features, the class of its label, and its split if it names one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    features, label = table_columns(path, label)
    header = read_header(path)
    feature_at = [header.index(f) for f in features]
    label_at = header.index(label)
    split_at = header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header else None
    rows: list[list[float]] = []
    raw_labels: list[str] = []
    given: list[int] = []
    ids: list[str] = []
    with _open(path) as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise BadDataError(f"{path}:{line}: {len(row)} cells, but the header names {len(header)} columns")
            rows.append([_number(path, line, header[i], row[i]) for i in feature_at])
            value = row[label_at].strip()
            if not value:
                raise BadDataError(f"{path}:{line}: column {label!r} (the label) is empty")
            raw_labels.append(value)
            given.append(_split_of(path, line, row[split_at]) if split_at is not None else UNASSIGNED)
            ids.append(f"{path.name}:{line}")
    if not rows:
        raise BadDataError(f"{path}: the table has a header but no rows")
    classes, labels = _classes(raw_labels)
    examples = Examples(torch.tensor(rows, dtype=torch.float32), torch.tensor(labels, dtype=torch.long))
    return Pool(examples, classes, torch.tensor(given, dtype=torch.int8), ids)


def _open(path: Path):
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None


def _number(path: Path, line: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        shown = cell if len(cell) <= 30 else cell[:27] + "..."
        raise BadDataError(
            f"{path}:{line}: column {column!r}: {shown!r} is not a number (every column but the label is a "
            "numeric feature; name the label column with --label)"
        ) from None
    if not math.isfinite(value):
        raise BadDataError(f"{path}:{line}: column {column!r}: {cell.strip()!r} is not a finite number")
    return value


def _split_of(path: Path, line: int, cell: str) -> int:
    name = SPLIT_NAMES.get(cell.strip().lower())
    if name is None:
        raise BadDataError(f"{path}:{line}: column 'split': {cell!r} is not train, val or test")
    return SPLITS.index(name)


def _classes(values: list[str]) -> tuple[tuple[str, ...], list[int]]:
    """Class names in order (integers numerically, strings alphabetically) and each row's class index."""
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        names = sorted(set(values))
        index = {name: i for i, name in enumerate(names)}
        return tuple(names), [index[v] for v in values]
    ordered = sorted(set(numbers))
    index = {n: i for i, n in enumerate(ordered)}
    return tuple(str(n) for n in ordered), [index[n] for n in numbers]


def read_rows(path: Path, features: list[str]) -> tuple[torch.Tensor, list[str]]:
    """The feature columns of a table to predict on (its label column, if any, is ignored): rows and their ids."""
    header = read_header(path)
    missing = [f for f in features if f not in header]
    if missing:
        raise BadDataError(
            f"{path}:1: missing the feature column(s) {', '.join(missing)} that the model was trained on"
        )
    at = [header.index(f) for f in features]
    rows, ids = [], []
    with _open(path) as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise BadDataError(
                    f"{path}:{reader.line_num}: {len(row)} cells, but the header names {len(header)} columns"
                )
            rows.append([_number(path, reader.line_num, header[i], row[i]) for i in at])
            ids.append(f"{path.name}:{reader.line_num}")
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), len(features)), ids
