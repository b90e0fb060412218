"""Stage 2: plain data -> a validated `Spec` (pydantic v2).

A layer entry is written as a bare name (``- relu``) or a one-key mapping
(``- conv2d: {out_channels: 6, kernel_size: 5}``). Before validation each entry is
normalized to ``{"kind": ..., **args}`` and validated against a discriminated
union of the registered layer kinds, the merges (``concat``/``add``/``multiply``
with parallel branches), the composites `repeat` and `residual`, and calls of
user-defined blocks. Any entry may also carry ``as: NAME`` (a tap: its output gets
a name) and ``from: NAME`` or ``from: [NAME, ...]`` (its input(s) are earlier named
outputs instead of the previous entry's); such an entry is wrapped in a `Tapped`.
pydantic errors are translated into `SpecError`s that name the file, line, column,
layer path and kind.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from annotated_types import Gt
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PrivateAttr,
    SkipValidation,
    Strict,
    Tag,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from netspec.config import BenchConfig, SweepConfig, TrainConfig
from netspec.errors import SpecError
from netspec.expr import evaluate, is_plain_arithmetic
from netspec.layers import LAYER_KINDS, MERGE_KINDS, MergeSpec, argument_names, can_be_bare, resolve_alias
from netspec.source import SourceMap, YamlPath, parse_yaml, read_yaml_file

COMPOSITES = ("repeat", "residual")
# The keys an entry may carry beside its kind: `as` names its output, `from` picks its input(s), `if` keeps
# it only where its condition holds (`if: "$se > 0"` in a block body).
TAP_KEYS = ("as", "from", "if")
# A tap name that always means the input of the sequence it is used in.
INPUT_NAME = "input"
TapName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# What `from:` reads: a name, or a block use's named output (`enc1.skip`).
FromName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")]


class BlockCall(BaseModel):
    """Use of a block defined under `blocks:`, with its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["block"] = "block"
    name: str
    # Checked when the graph is expanded, where the spec's blocks are known: a name that is no block is an
    # unknown kind first, whatever its value (`subtract: [identity, identity]` before subtract existed).
    args: Any = {}


class Repeat(BaseModel):
    """`layers` repeated `times` times (each copy with its own weights).

    The body is kept as written and validated once per copy when the graph is expanded, because
    it may use the copy's index: `$i` (0, 1, ...) and `$n` (= times).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["repeat"] = "repeat"
    times: Annotated[int, Strict(), Gt(0)]
    layers: RawEntries


def _check_raw_body(value: Any) -> Any:
    """A body kept as written (a repeat's or a block's) must still be a non-empty list of entries."""
    if not isinstance(value, list) or not value:
        raise PydanticCustomError("layer_list", "must be a non-empty list of layers", {})
    for item in value:
        if not isinstance(item, (str, dict)):
            raise PydanticCustomError(
                "layer_entry",
                "a layer is a name like 'relu' or a one-key mapping like 'conv2d: ...', got {type}",
                {"type": type(item).__name__},
            )
    return value


class Residual(BaseModel):
    """body(x) + shortcut(x).

    shortcut: `auto` (identity when shapes match, else a strided 1×1 conv),
    `identity`, `projection` (always the 1×1 conv), or an explicit layer list.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["residual"] = "residual"
    layers: list[LayerEntry] = Field(min_length=1)
    shortcut: Literal["auto", "identity", "projection"] | list[LayerEntry] = "auto"


def _normalize_branch(value: Any) -> Any:
    """A branch is a list of entries; `identity`, null and [] are the input itself."""
    if value is None or value == "identity":
        return []
    if not isinstance(value, list):
        raise PydanticCustomError(
            "branch",
            "a branch is a list of layers or identity; write one layer in brackets: [relu]",
            {},
        )
    return value


def _check_condition(value: Any) -> Any:
    """`if:` holds true or false once its expression is evaluated (a string left here used no `$name`)."""
    if value is not None and not isinstance(value, bool):
        raise PydanticCustomError(
            "condition",
            'a condition is true or false, e.g. if: "$se > 0" (a $ before each block parameter or spec variable)',
            {},
        )
    return value


class Tapped(BaseModel):
    """An entry with a named output (`as`), named inputs (`from`) and/or a condition (`if`).

    An entry whose condition is false is left out when the graph is expanded: its output is its input, so a
    later `from:` its name reads what it would have read (an optional squeeze-excite passes its input on).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    kind: Literal["tap"] = "tap"
    entry: LayerEntry
    name: TapName | None = Field(default=None, alias="as")
    inputs: Annotated[list[FromName], Field(min_length=1)] | None = Field(default=None, alias="from")
    condition: Annotated[bool | None, BeforeValidator(_check_condition)] = Field(default=None, alias="if")


def _entry_tag(value: Any) -> str:
    """Which member of LayerEntry validates `value`: a composite, a merge, a tap, a block call, or a layer kind."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    if not isinstance(kind, str):
        return "block"
    if kind in MERGE_KINDS:
        return "merge"
    return kind if kind in (*COMPOSITES, "block", "tap") else "layer"


def kind_key(mapping: dict[Any, Any]) -> Any:
    """The key of an entry mapping that names its kind (the one that is not `as` or `from`)."""
    return next((k for k in mapping if k not in TAP_KEYS), None)


def _normalize_entry(value: Any) -> Any:
    """`relu` -> {"kind": "relu"}; `{conv2d: {...}}` -> {"kind": "conv2d", ...}; with as/from -> a tap."""
    if isinstance(value, BaseModel):
        return value
    if isinstance(value, dict) and any(k in value for k in TAP_KEYS) and value.get("kind") != "tap":
        inner = {k: v for k, v in value.items() if k not in TAP_KEYS}
        inputs = value.get("from")
        # An entry left out (if: false) is not checked: its arguments may make sense only where it is kept
        # (a squeeze-excite of `$se * $c` = 0 channels).
        tapped = {"kind": "tap", "entry": inner if inner and value.get("if") is not False else "identity"}
        if "as" in value:
            tapped["as"] = value["as"]
        if "from" in value:
            tapped["from"] = [inputs] if isinstance(inputs, str) else inputs
        if "if" in value:
            tapped["if"] = value["if"]
        return tapped
    if isinstance(value, str):
        name, args = value, None
    elif isinstance(value, dict) and len(value) == 1:
        ((name, args),) = value.items()
        if not isinstance(name, str):
            raise PydanticCustomError("layer_entry", "a layer name must be text, got {name!r}", {"name": name})
    elif isinstance(value, dict):
        kinds = [k for k in value if k in LAYER_KINDS or k in MERGE_KINDS or k in COMPOSITES]
        strays = [str(k) for k in value if k not in kinds]
        if len(kinds) == 1 and all(k in _argument_names_of(kinds[0]) for k in strays):
            # The usual YAML slip: the arguments sit beside the kind instead of under it.
            kind, names = kinds[0], ", ".join(f"'{k}'" for k in strays)
            what = f"{names} is an argument" if len(strays) == 1 else f"{names} are arguments"
            raise PydanticCustomError(
                "layer_entry",
                "{what} of {kind}: indent under {kind}, or write {example}",
                {"what": what, "kind": kind, "example": f"{kind}: {{{strays[0]}: ...}}"},
            )
        keys = ", ".join(map(str, value)) or "none"
        raise PydanticCustomError(
            "layer_entry",
            "a layer is one name or a one-key mapping (conv2d: ...); "
            "this mapping has {count} keys ({keys}): put each layer in its own list item",
            {"count": len(value), "keys": keys},
        )
    else:
        raise PydanticCustomError(
            "layer_entry",
            "a layer is a name like 'relu' or a one-key mapping like 'conv2d: ...', got {type}",
            {"type": type(value).__name__},
        )
    if name not in LAYER_KINDS and name not in MERGE_KINDS and name not in COMPOSITES:
        name = resolve_alias(name) or name  # PyTorch's spellings: ReLU, nn.ReLU, Conv2d
    if name in MERGE_KINDS and isinstance(args, list):
        return {"kind": name, "branches": args}  # the short form: one list per branch
    if name in LAYER_KINDS or name in COMPOSITES or name in MERGE_KINDS:
        if args is None:
            return {"kind": name}
        if not isinstance(args, dict):
            raise PydanticCustomError(
                "layer_args",
                "the arguments of {name} must be a mapping (name: value), got {type}",
                {"name": name, "type": type(args).__name__},
            )
        if "kind" in args:
            raise PydanticCustomError("layer_args", "'kind' is not an argument of {name}", {"name": name})
        return {"kind": name, **args}
    return {"kind": "block", "name": name, "args": {} if args is None else args}


def _argument_names_of(kind: str) -> list[str]:
    cls = {"repeat": Repeat, "residual": Residual}.get(kind) or entry_class(kind)
    return argument_names(cls) if cls is not None else []


# Any argument may be written as an expression: `$width * 2`, `round(0.25 * $w)`, `1 - 0.9997`.
Expression = Annotated[str, Field(pattern=r"[$0-9]", title="Expression")]


def _layer_input_schema_type() -> Any:
    """The YAML form of a layer entry, for the JSON Schema that editors use."""
    entries: list[Any] = []
    bare = [k for k, cls in LAYER_KINDS.items() if can_be_bare(cls)]
    entries.append(Literal[tuple(bare)])  # type: ignore[misc]
    tap_keys: dict[str, Any] = {
        "tap_as": (TapName | None, Field(None, alias="as", description="name this entry's output")),
        "tap_from": (
            FromName | list[FromName] | None,
            Field(None, alias="from", description="take the input from earlier named output(s)"),
        ),
        "tap_if": (
            bool | Expression | None,
            Field(None, alias="if", description='keep this entry only where the condition holds ("$se > 0")'),
        ),
    }
    kinds = [*LAYER_KINDS.items(), *MERGE_ENTRIES.items(), ("repeat", Repeat), ("residual", Residual)]
    for kind, cls in kinds:
        fields = {}
        for n in argument_names(cls):
            info = cls.model_fields[n]
            typed = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            default = ... if info.is_required() else info.default
            fields[n] = (typed | Expression, Field(default, description=info.description))  # type: ignore[operator]
        args_model = create_model(f"{cls.__name__}Args", __config__=ConfigDict(extra="forbid"), **fields)
        value_type = args_model | None if can_be_bare(cls) else args_model  # type: ignore[operator]
        if kind in MERGE_ENTRIES:
            value_type = value_type | cls.model_fields["branches"].annotation  # the short form: a list per branch
        entries.append(
            create_model(
                f"{cls.__name__}Entry",
                __config__=ConfigDict(extra="forbid"),
                **{kind: (value_type, ...)},
                **tap_keys,
            )
        )
    entries.append(create_model("TapEntry", __config__=ConfigDict(extra="forbid"), **tap_keys))
    # A use of a block from `blocks:`; its names are the user's, so any identifier. In a block body, `- $act` is
    # a parameter that stands for a layer (or a layer with its arguments).
    entries.append(Annotated[str, Field(title="BlockName", pattern=r"^\$?[A-Za-z_][A-Za-z0-9_]*$")])
    entries.append(Annotated[dict[str, dict[str, Any] | str | list[str] | None], Field(title="BlockCall")])
    return Union[tuple(entries)]  # noqa: UP007


LayerNode = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in LAYER_KINDS.items())],  # noqa: UP007
    Discriminator("kind"),
]


class MergeEntry(BaseModel):
    """Mixin of the merge entries: parallel branches whose outputs the merge kind combines."""

    branches: list[Branch] = []

    @property
    def op(self) -> MergeSpec:
        """The merge kind itself, without its branches."""
        return MERGE_KINDS[self.kind].model_validate(self.model_dump(include=set(MERGE_KINDS[self.kind].model_fields)))


# One entry model per merge kind: its own arguments (e.g. concat's dim) plus `branches`.
MERGE_ENTRIES: dict[str, type[BaseModel]] = {
    kind: create_model(f"{cls.__name__}Entry", __base__=(cls, MergeEntry)) for kind, cls in MERGE_KINDS.items()
}
MergeNode = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in MERGE_ENTRIES.items())],  # noqa: UP007
    Discriminator("kind"),
]

LayerEntry = Annotated[
    Union[  # noqa: UP007
        Annotated[LayerNode, Tag("layer")],
        Annotated[MergeNode, Tag("merge")],
        Annotated[Repeat, Tag("repeat")],
        Annotated[Residual, Tag("residual")],
        Annotated[Tapped, Tag("tap")],
        Annotated[BlockCall, Tag("block")],
    ],
    Discriminator(_entry_tag),
    BeforeValidator(_normalize_entry, json_schema_input_type=_layer_input_schema_type()),
]
Branch = Annotated[
    list[LayerEntry],
    BeforeValidator(_normalize_branch, json_schema_input_type=list[LayerEntry] | Literal["identity"] | None),
]
# A body kept as written until the graph is expanded (a repeat's, a block's): the schema of entries for
# editors, no validation here, and serialized back as written.
RawEntries = Annotated[
    SkipValidation[list[LayerEntry]],
    BeforeValidator(_check_raw_body),
    PlainSerializer(lambda body: body, return_type=list),
]
# Pydantic builds the mutually recursive entry schemas depth-first, nesting each merge kind's entry inside the
# previous one's (an Annotated alias such as LayerEntry is no definition it can refer back to): about 200 frames
# per merge kind, past Python's default limit of 1,000 with five merge kinds.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
Repeat.model_rebuild()
Residual.model_rebuild()
Tapped.model_rebuild()
for _entry_model in MERGE_ENTRIES.values():
    _entry_model.model_rebuild()


class BlockDef(BaseModel):
    """A reusable block: a layer list with `$name` parameters.

    `params` maps each parameter to its default; a parameter whose default is null
    must be given at every use.
    """

    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = {}
    # Validated when the block is used, after its parameters are substituted.
    layers: RawEntries
    # Named outputs (`as:` names of its body) a caller reads beside its output: `from: NAME.skip`, NAME the use's
    # `as:` (or the block's name). A block with outputs is written in place: its layers become the caller's.
    outputs: list[TapName] = []


ENTRY_LIST = TypeAdapter(list[LayerEntry])

InputShape = Annotated[tuple[Annotated[int, Strict(), Gt(0)], ...], Field(min_length=1, max_length=3)]


# A spec's name names files (runs, exports, pictures): short enough for any file system's 255-byte names.
MAX_NAME = 100


class Spec(BaseModel):
    """A network spec: one file describes one experiment."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    input: InputShape
    # Spec variables: `$name` anywhere in layers and blocks; `--set name=value` on every command.
    vars: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], int | float | bool | str] = {}
    blocks: dict[str, BlockDef] = {}
    layers: Annotated[list[LayerEntry], Field(min_length=1)]
    train: TrainConfig = Field(default_factory=TrainConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    sweep: SweepConfig | None = None

    _source: SourceMap = PrivateAttr(default_factory=SourceMap)

    @model_validator(mode="after")
    def _block_names_are_free(self) -> Spec:
        for name in self.blocks:
            taken = name if name in (*LAYER_KINDS, *MERGE_KINDS, *COMPOSITES) else resolve_alias(name)
            if taken is not None:
                raise PydanticCustomError(
                    "block_name",
                    "block name '{name}' is taken by the layer kind {kind}; rename the block",
                    {"name": name, "kind": taken},
                )
        return self

    @property
    def source(self) -> SourceMap:
        """Where each value of the spec was written (file, line, column)."""
        return self._source

    def to_data(self) -> dict[str, Any]:
        """The spec in its YAML form (bare names and one-key mappings)."""
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        data["input"] = list(self.input)
        if self.vars:
            data["vars"] = dict(self.vars)
        if self.blocks:
            # (`outputs` only where a block has them: a spec without them reads as it did before they existed)
            data["blocks"] = {
                n: b.model_dump(mode="json", exclude=set() if b.outputs else {"outputs"})
                for n, b in self.blocks.items()
            }
        data["layers"] = [entry_to_data(e) for e in self.layers]
        data["train"] = self.train.model_dump(mode="json")
        data["bench"] = self.bench.model_dump(mode="json")
        if self.sweep is not None:
            data["sweep"] = self.sweep.model_dump(mode="json", exclude_defaults=True)
        return data


def entry_to_data(entry: Any) -> Any:
    """A validated layer entry back in its YAML form."""
    if isinstance(entry, BlockCall):
        return {entry.name: entry.args} if entry.args else entry.name
    if isinstance(entry, Tapped):
        inner = entry_to_data(entry.entry)
        data = {inner: None} if isinstance(inner, str) else dict(inner)
        if entry.name is not None:
            data["as"] = entry.name
        if entry.inputs is not None:
            data["from"] = entry.inputs[0] if len(entry.inputs) == 1 else list(entry.inputs)
        if entry.condition is not None:
            data["if"] = entry.condition
        return data
    args = entry.model_dump(mode="json", exclude={"kind", "branches"}, exclude_defaults=True)
    if isinstance(entry, Repeat):
        args["layers"] = list(entry.layers)  # kept as written
    if isinstance(entry, Residual):
        args["layers"] = [entry_to_data(e) for e in entry.layers]
        if isinstance(entry, Residual) and isinstance(entry.shortcut, list):
            args["shortcut"] = [entry_to_data(e) for e in entry.shortcut]
    if isinstance(entry, MergeEntry) and entry.branches:
        args["branches"] = [[entry_to_data(e) for e in branch] for branch in entry.branches]
    return {entry.kind: args} if args else entry.kind


# --- errors ----------------------------------------------------------------------------------


def closest(word: str, choices: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str | None:
    """The choice `word` is most likely a misspelling of, if any is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, choices: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str:
    suggestion = closest(word, choices, cutoff)
    return f" (did you mean '{suggestion}'?)" if suggestion else ""


def beside_the_kind(key: str, kind: str, value: Any) -> str:
    """`from:`/`as:`/`if:` written among a kind's arguments: say where it goes."""
    written = f"[{', '.join(map(str, value))}]" if isinstance(value, list) else str(value)
    return (
        f"{key}: goes beside the kind, not among its arguments; write '- {kind}: ...' and under it, "
        f"indented like {kind}, '{key}: {written}'"
    )


def entry_class(kind: str | None) -> type[BaseModel] | None:
    """The model of a layer or merge kind, for its argument names."""
    return LAYER_KINDS.get(kind) or MERGE_ENTRIES.get(kind)  # type: ignore[arg-type]


def describe_path(loc: YamlPath) -> tuple[str, str | None, YamlPath]:
    """Split a YAML path into (layer path, layer kind, remaining field path).

    ("layers", 2, "repeat", "layers", 0, "conv2d", "stride") ->
    ("layers[2].repeat[0]", "conv2d", ("stride",)); a layer in a merge's branch b is
    `.branch[b][i]`.
    """
    if len(loc) < 2 or loc[0] != "layers" or not isinstance(loc[1], int):
        return "", None, tuple(loc)
    path, i = f"layers[{loc[1]}]", 2
    kind: str | None = None
    while i < len(loc) and isinstance(loc[i], str):
        if loc[i] in TAP_KEYS:
            return path, None, tuple(loc[i:])
        kind = loc[i]
        if kind in MERGE_KINDS:
            j = i + 1 + int(i + 1 < len(loc) and loc[i + 1] == "branches")
            if j + 1 < len(loc) and isinstance(loc[j], int) and isinstance(loc[j + 1], int):
                path += f".branch[{loc[j]}][{loc[j + 1]}]"
                kind, i = None, j + 2
                continue
            if j < len(loc) and isinstance(loc[j], int):  # the branch itself
                return path, kind, (f"branch[{loc[j]}]", *loc[j + 1 :])
        nested = i + 2 < len(loc) and loc[i + 1] in ("layers", "shortcut") and isinstance(loc[i + 2], int)
        if not nested:
            return path, kind, tuple(loc[i + 1 :])
        name = kind if loc[i + 1] == "layers" else "shortcut"
        path += f".{name}[{loc[i + 2]}]"
        kind, i = None, i + 3
    return path, kind, tuple(loc[i:])


_ENTRY_TAGS = ("layer", "merge", "block", "tap", *COMPOSITES)


def _yaml_path(loc: tuple[Any, ...], data: Any) -> tuple[YamlPath, bool]:
    """Map a pydantic error location onto the YAML path the user wrote.

    pydantic reports discriminated-union members by tag ("layer", then the kind);
    in YAML the kind is the entry's single key, and block arguments sit under the
    block's name. Members of plain unions (`int | [h, w]`) appear in `loc` as type
    names; they are dropped, and the second value says whether that happened.
    """
    out: list[Any] = []
    node = data
    items = list(loc)
    dropped = False
    while items:
        part = items.pop(0)
        if isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if part < len(node) else None
            while isinstance(node, (str, dict)) and items and items[0] in _ENTRY_TAGS:
                tag = items.pop(0)
                if tag == "tap":  # `as`/`from` sit beside the kind key; the wrapped entry is the kind key
                    if items and items[0] == "entry":
                        items.pop(0)
                        continue
                    break
                if tag in ("layer", "merge") and items:
                    items.pop(0)  # the kind tag
                key = node if isinstance(node, str) else kind_key(node)
                out.append(key)
                node = node.get(key) if isinstance(node, dict) else None
                if tag == "block" and items and items[0] == "args":
                    items.pop(0)
                break
            continue
        if part == "branches" and isinstance(node, list):
            continue  # a merge written in the short form: its value is the branch list itself
        if isinstance(node, dict) and (part in node or not items):
            out.append(part)
            node = node.get(part)
        elif isinstance(node, (dict, list)):
            dropped = True  # a union member's name
        else:
            dropped = True
            break
    return tuple(out), dropped


_TYPE_ERRORS = ("literal_error", "is_instance_of", "model_type", "dict_type", "none_required")


def _collapse_unions(errors: list[Any], data: Any, loc_prefix: YamlPath = ()) -> list[tuple[YamlPath, dict[str, Any]]]:
    """One error per field: of a union's member errors keep the most specific one."""
    groups: dict[Any, list[tuple[YamlPath, dict[str, Any]]]] = {}
    for n, error in enumerate(errors):
        path, dropped = _yaml_path((*loc_prefix, *error["loc"]), data)
        groups.setdefault(path if dropped else n, []).append((path, error))

    def type_only(items: list[tuple[YamlPath, dict[str, Any]]]) -> bool:
        return all(e["type"].endswith("_type") or e["type"] in _TYPE_ERRORS for _, e in items)

    all_paths = [path for items in groups.values() for path, _ in items]
    result = []
    for key, items in groups.items():
        # A value of the right shape for one union member (a list for `[h, w]`) gets that member's error,
        # which points deeper into the value; the other members' type errors say nothing useful then.
        here = items[0][0]
        deeper = any(len(p) > len(here) and p[: len(here)] == here for p in all_paths)
        if isinstance(key, tuple) and type_only(items) and deeper:
            continue
        specific = [i for i in items if not type_only([i])]
        if specific or len(items) == 1:
            result.append((specific or items)[0])
            continue
        path, first = items[0]
        wanted = dict.fromkeys(e["msg"].removeprefix("Input should be ") for _, e in items)
        result.append((path, {**first, "msg": "Input should be " + " or ".join(wanted)}))
    return result


def _message(error: dict[str, Any], field: str, in_layer: bool) -> str:
    etype, msg = error["type"], error["msg"]
    noun = "argument" if in_layer else "key"
    if etype == "extra_forbidden":
        return f"unknown {noun} '{field}'"
    if etype == "missing":
        return f"missing required {noun} '{field}'"
    if etype == "union_tag_invalid":
        return msg
    msg = msg.removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:]
    value = error.get("input")
    if isinstance(value, str) and len(value) > 60:
        value = f"{value[:40]}...' ({len(value):,} characters)"
        got = f", got '{value}"
    else:
        got = f", got {value!r}" if isinstance(value, (int, float, str, bool)) or value is None else ""
    return f"{field}: {msg}{got}" if field else msg


def _suggested_field(loc: YamlPath) -> str | None:
    """For an unknown argument of a layer kind, the argument it is a typo of, if any."""
    _, kind, rest = describe_path(loc)
    cls = entry_class(kind)
    if cls is None or not rest:
        return None
    return closest(str(rest[-1]), argument_names(cls))


def _known_keys(where: YamlPath) -> list[str]:
    """The keys a section of the spec takes (train:, bench:, sweep:, a block definition), for suggestions."""
    sections: dict[str, type[BaseModel]] = {"train": TrainConfig, "bench": BenchConfig, "sweep": SweepConfig}
    if len(where) == 1 and where[0] in sections:
        return list(sections[str(where[0])].model_fields)
    if len(where) == 2 and where[0] == "blocks":
        return list(BlockDef.model_fields)
    return []


def spec_error_from_validation(
    exc: ValidationError,
    data: Any,
    source: SourceMap,
    prefix: YamlPath = (),
    layers_path: str = "layers",
    loc_prefix: YamlPath = (),
) -> SpecError:
    """One SpecError (up to five problems, one per line) from a pydantic ValidationError.

    `prefix` is where `data` sits in the YAML document (a block's definition); `layers_path`
    names its layer list in paths (a block's use, e.g. `layers[3].basic_block`).
    """
    errors = _collapse_unions(exc.errors(), data, loc_prefix)
    # A misspelt argument shows up twice: as unknown and as missing. Say it once, as the typo.
    typos = {
        (loc[:-1], suggestion)
        for loc, error in errors
        if error["type"] == "extra_forbidden" and (suggestion := _suggested_field(loc))
    }
    errors = [(loc, e) for loc, e in errors if not (e["type"] == "missing" and (loc[:-1], loc[-1]) in typos)]
    lines: list[SpecError] = []
    for loc, error in errors[:5]:
        layer_path, kind, rest = describe_path(loc)
        if layer_path:
            layer_path = layers_path + layer_path.removeprefix("layers")
        field = ".".join(str(p) for p in rest) if layer_path else ".".join(str(p) for p in (*prefix, *loc))
        message = _message(error, field, bool(layer_path))
        if error["type"] == "extra_forbidden" and kind is not None and len(rest) == 1 and rest[0] in TAP_KEYS:
            message += f": {beside_the_kind(str(rest[0]), kind, error.get('input'))}"
        elif error["type"] == "extra_forbidden" and (cls := entry_class(kind)) is not None:
            choices = argument_names(cls)
            message += did_you_mean(str(rest[-1]), choices)
            message += f"; {kind} takes: {', '.join(choices) or 'no arguments'}"
        elif error["type"] == "extra_forbidden" and not layer_path:
            message += did_you_mean(str(loc[-1]), _known_keys((*prefix, *loc[:-1])))
        where = f"{layer_path} {kind or ''}".strip() if layer_path else None
        at_key = error["type"] in ("extra_forbidden", "missing")
        lines.append(source.error(message, (*prefix, *loc), where, key=at_key))
    first = lines[0]
    first.message += "".join(f"\n{e}" for e in lines[1:])
    hidden = len(errors) - len(lines)
    if hidden:
        first.message += f"\n... and {hidden} more problem{'s' if hidden > 1 else ''}"
    return first


# --- loading ---------------------------------------------------------------------------------


def validate_spec(data: Any, source: SourceMap | None = None, variables: dict[str, Any] | None = None) -> Spec:
    """Validate plain data (as loaded from YAML) into a Spec; `variables` override its `vars:`."""
    source = source or SourceMap()
    if data is None:
        raise source.error("the spec is empty; it needs at least name, input and layers")
    if not isinstance(data, dict):
        raise source.error(f"a spec must be a mapping with name, input and layers, not a {type(data).__name__}")
    unknown = next((k for k in data if k not in Spec.model_fields), None)
    if unknown is not None:
        hint = did_you_mean(str(unknown), list(Spec.model_fields))
        raise source.error(f"unknown top-level key '{unknown}'{hint}", (unknown,), key=True)
    data = _with_variables(data, source, variables or {})
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, data, source) from None
    spec._source = source
    return spec


def parse_spec(text: str, file: str | None = None, variables: dict[str, Any] | None = None) -> Spec:
    """Parse and validate spec text."""
    data, source = parse_yaml(text, file)
    return validate_spec(data, source, variables)


def load_spec(path: str | Path, variables: dict[str, Any] | None = None) -> Spec:
    """Read, parse and validate a spec file; `variables` (name -> value) override its `vars:`."""
    data, source = read_yaml_file(path)
    return validate_spec(data, source, variables)


def as_spec(spec: Spec | str | Path | dict[str, Any], variables: dict[str, Any] | None = None) -> Spec:
    """A Spec from what the Python API was given: a Spec, a path to a YAML file, YAML text, or a dict (as
    `yaml.safe_load` gives it); invalid ones raise the same located SpecError as the command line."""
    if isinstance(spec, Spec):
        return spec if not variables else validate_spec(spec.to_data(), spec.source, variables)
    if isinstance(spec, dict):
        return validate_spec(spec, SourceMap(file="<dict>"), variables)
    if isinstance(spec, Path):
        return load_spec(spec, variables)
    if isinstance(spec, str):
        if "\n" in spec or (": " in spec and not Path(spec).exists()):
            return parse_spec(spec, "<string>", variables)
        return load_spec(spec, variables)
    raise SpecError(f"a spec is a path, YAML text, a dict or a netspec.Spec, not {type(spec).__name__}")


# --- variables and expressions -----------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A value typed on the command line: 64 -> int, 1e-4 -> float, true -> bool, relu -> str."""
    text = text.strip()
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{text} is not a finite number")
        return value
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        raise ValueError(f"cannot read {text!r} as a value (a number, true/false or a word)") from None
    if not isinstance(value, (int, float, bool, str)) or (isinstance(value, float) and value != value):
        raise ValueError(f"cannot read {text!r} as a value: a variable is a number, true/false or a word")
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is not a finite number")
    return value


def substitute(
    value: Any, env: dict[str, Any], path: YamlPath, source: SourceMap, unknown: Callable[[str], str]
) -> Any:
    """`value` with every expression replaced by its value: strings that use `$names`, and plain arithmetic.

    A repeat's body is left as written: it is substituted once per copy, with `$i` and `$n`, when the
    graph is expanded.
    """
    if isinstance(value, str) and ("$" in value or is_plain_arithmetic(value)):
        try:
            return evaluate(value, env, unknown)
        except ValueError as exc:
            layer_path, kind, _ = describe_path(path)
            where = f"{layer_path} {kind or ''}".strip() or None
            if len(path) == 2 and path[0] == "vars":
                where = f"vars: ${path[1]}"
            raise source.error(str(exc), path, where) from None
    if isinstance(value, dict):
        return {
            k: v if _is_repeat_body(value, k) else substitute(v, env, (*path, k), source, unknown)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute(v, env, (*path, i), source, unknown) for i, v in enumerate(value)]
    return value


def _is_repeat_body(mapping: dict[Any, Any], key: Any) -> bool:
    """True for the `layers` of a repeat's arguments ({times: 2, layers: [...]})."""
    return key == "layers" and "times" in mapping


def _with_variables(data: dict[str, Any], source: SourceMap, overrides: dict[str, Any]) -> dict[str, Any]:
    """The spec's data with `--set` overrides applied to `vars:` and every `$variable` in `layers` replaced.

    Block bodies are left as written: a block's `$parameters` (and the spec's variables) are
    substituted each time the block is used.
    """
    declared = data.get("vars") or {}
    if not isinstance(declared, dict):
        return data  # pydantic reports it, with its position
    for name in overrides:
        if name not in declared:
            hint = did_you_mean(name, list(declared))
            known = ", ".join(declared) or "none"
            raise SpecError(
                f"--set {name}: the spec has no variable '{name}'{hint}; its vars: {known}", file=source.file
            )
    env: dict[str, Any] = {}
    for name, value in declared.items():  # in order: a variable may use the ones before it
        env[name] = (
            overrides[name]
            if name in overrides
            else substitute(value, env, ("vars", name), source, _unknown_variable(env))
        )
    resolved = dict(data)
    if env:
        resolved["vars"] = env
    if "layers" in data:
        resolved["layers"] = substitute(data["layers"], env, ("layers",), source, _unknown_variable(env))
    return resolved


def _unknown_variable(env: dict[str, Any]) -> Callable[[str], str]:
    def message(name: str) -> str:
        known = ", ".join(f"${k}" for k in env) or "none"
        return f"unknown variable ${name}{did_you_mean(name, list(env))}; the spec's vars: {known} (declare it under vars:)"

    return message
