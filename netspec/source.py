"""Stage 1: text -> plain Python data, remembering where every value came from.

Specs are read with PyYAML's SafeLoader (a spec can never construct Python
objects), and every mapping key, sequence item and scalar is recorded in a
`SourceMap` from its path (e.g. ``("layers", 3, "conv2d", "kernel_size")``) to
its line and column, so that later stages can point at the exact spot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from netspec.errors import SpecError

YamlPath = tuple[str | int, ...]

# Guards against YAML bombs: alias expansion ("billion laughs") and deep nesting.
MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_BYTES = 10_000_000
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


@dataclass
class SourceMap:
    """Line and column (1-based) of every value in a loaded document."""

    file: str | None = None
    marks: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)  # where each value starts
    key_marks: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)  # where its key is written

    def locate(self, path: YamlPath, key: bool = False) -> tuple[int, int] | None:
        """Position of `path` (its key with `key=True`), or of its closest recorded ancestor."""
        if key and tuple(path) in self.key_marks:
            return self.key_marks[tuple(path)]
        for end in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:end]))
            if mark is not None:
                return mark
        return None

    def error(self, message: str, path: YamlPath = (), where: str | None = None, key: bool = False) -> SpecError:
        """A SpecError pointing at `path` (at its key with `key=True`)."""
        mark = self.locate(path, key)
        line, column = mark if mark else (None, None)
        return SpecError(message, file=self.file, line=line, column=column, where=where)


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, source: SourceMap) -> None:
        self.loader = loader
        self.source = source
        self.count = 0

    def build(self, node: Node, path: YamlPath, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES or depth > MAX_DEPTH:
            raise self.source.error(
                f"document too large or too deeply nested (more than {MAX_NODES:,} values "
                f"or {MAX_DEPTH} levels, e.g. through repeated aliases)",
                path,
            )
        self.source.marks.setdefault(path, _mark(node))
        if isinstance(node, (MappingNode, SequenceNode)) and node.tag not in (_MAP_TAG, _SEQ_TAG):
            raise _error_at(self.source, node, f"invalid YAML: unsupported tag '{node.tag}'")
        if isinstance(node, MappingNode):
            self.loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
            result: dict[Any, Any] = {}
            first_seen: dict[Any, tuple[int, int]] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    raise _error_at(self.source, key_node, "mapping keys must be plain names")
                key = self.loader.construct_object(key_node)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise _error_at(self.source, key_node, f"unsupported key {key!r}")
                if key in result:
                    line, _ = first_seen[key]
                    raise _error_at(self.source, key_node, f"duplicate key '{key}' (first given on line {line})")
                first_seen[key] = _mark(key_node)
                self.source.key_marks.setdefault((*path, key), _mark(key_node))
                result[key] = self.build(value_node, (*path, key), depth + 1)
            return result
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node)


def _mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _error_at(source: SourceMap, node: Node, message: str) -> SpecError:
    line, column = _mark(node)
    return SpecError(message, file=source.file, line=line, column=column)


def parse_yaml(text: str, file: str | None = None) -> tuple[Any, SourceMap]:
    """Parse one YAML document safely; return its data and its SourceMap."""
    source = SourceMap(file=file)
    if len(text) > MAX_BYTES:
        raise SpecError(f"too large for a spec (more than {MAX_BYTES:,} characters)", file=file)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, source
        return _Builder(loader, source).build(node, (), 0), source
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.context}: {exc.problem}"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        hint = _bare_name_hint(text, mark.line) if mark and exc.problem == "mapping values are not allowed here" else ""
        raise SpecError(f"invalid YAML: {problem}{hint}", file=file, line=line, column=column) from None
    except RecursionError:
        raise SpecError(f"invalid YAML: nested too deeply (more than {MAX_DEPTH} levels)", file=file) from None
    except yaml.YAMLError as exc:  # reader errors: control characters and the like
        raise SpecError(f"invalid YAML: {exc}", file=file) from None
    finally:
        loader.dispose()


_BARE_ITEM = re.compile(r"^(\s*)-\s+([A-Za-z_$][\w.$]*)\s*$")
_KEY = re.compile(r"^\s*([A-Za-z_$][\w$]*)\s*:")


def _bare_name_hint(text: str, row: int) -> str:
    """For `- batchnorm` followed by `as: x`: YAML reads both lines as one name and then trips on the colon. The
    fix is a colon after the kind, which makes the item a mapping that `as:` (or `from:`, `if:`) joins."""
    lines = text.splitlines()
    key = _KEY.match(lines[row]) if row < len(lines) else None
    above = next((lines[r] for r in range(row - 1, -1, -1) if lines[r].strip()), "")
    item = _BARE_ITEM.match(above)
    if key is None or item is None:
        return ""
    indent, name, key_name = item.group(1), item.group(2), key.group(1)
    return (
        f"; '- {name}' is a bare name, so '{key_name}:' below it cannot belong to it: write '- {name}:' "
        f"(a colon after the kind; its arguments, if any, after the colon) and keep '{key_name}:' under it, "
        f"indented like {name} (column {len(indent) + 3})"
    )


def read_yaml_file(path: str | Path) -> tuple[Any, SourceMap]:
    """Read and parse a spec file, with clear errors for every way that can fail."""
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise SpecError("no such file", file=name)
    if p.is_dir():
        raise SpecError("is a directory, not a spec file", file=name)
    if not p.is_file():  # a FIFO would block, /dev/zero never ends: read only regular files
        raise SpecError("is not a regular file (a device, pipe or socket); give a spec file", file=name)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)  # never more than the limit, whatever the file claims its size is
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror}", file=name) from None
    if len(raw) > MAX_BYTES:
        raise SpecError(f"file too large for a spec (more than {MAX_BYTES:,} bytes)", file=name)
    if b"\x00" in raw:
        raise SpecError("not a text file (it contains NUL bytes)", file=name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text (bad byte at offset {exc.start})", file=name) from None
    return parse_yaml(text, name)
