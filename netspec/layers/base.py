"""What every layer kind is: the `LayerSpec` base, the registry, and the shape vocabulary.

A kind is a pydantic model whose fields are its arguments (named as in torch.nn) and which
knows, from the shape of one example (never the batch):

- ``output_shape(shape)``: the shape rule (raises `ShapeError` with the numbers);
- ``num_params(shape)`` and ``macs(shape, out)``: what the summary shows (MACs count
  multiply-accumulates of convolutions, linear layers and attention matmuls);
- ``saved_for_backward(run)``: what autograd keeps for backward, for the memory model (layers/saved.py);
- ``module_call(shape)``: the torch module, as a constructor call (the export prints it).

Dimensions (`dim`, `start_dim`, `dims`, ...) are counted as torch counts them, with the
batch as dimension 0: `flatten: {start_dim: 1}` and `permute: {dims: [0, 2, 3, 1]}` read as
the PyTorch code they come from. Shapes themselves never include the batch.

Merges (``concat``, ``add``, ``subtract``, ``multiply``, ``matmul``) take several tensors; they are `MergeSpec`s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import torch
from annotated_types import Ge, Gt, Le
from pydantic import BaseModel, ConfigDict, Strict
from torch import nn

from netspec.layers.saved import Run, Tensor

Shape = tuple[int, ...]
Combine = Callable[[list[torch.Tensor]], torch.Tensor]

Size = Annotated[int, Strict(), Gt(0)]
NonNegative = Annotated[int, Strict(), Ge(0)]
SizeOrPair = Size | tuple[Size, Size]
NonNegativeOrPair = NonNegative | tuple[NonNegative, NonNegative]
Probability = Annotated[float, Ge(0.0), Le(1.0)]
Dim = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]


class ShapeError(ValueError):
    """A layer cannot take its input shape; the message gives the numbers."""


def format_shape(shape: Shape) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value[0], value[1]) if isinstance(value, (tuple, list)) else (value, value)  # type: ignore[return-value]


def format_pair(value: int | tuple[int, int]) -> str:
    h, w = pair(value)
    return str(h) if h == w else f"{h}×{w}"


def axis(dim: int, rank: int, name: str = "dim", batch: bool = False) -> int:
    """The position in an example's shape of torch dimension `dim` of a batch of examples of `rank`.

    Like torch, dimension 0 is the batch and negative dims count from the end; the result
    indexes the shape without the batch. `batch=True` allows dim 0 (returns -1 then).
    """
    full = rank + 1
    if not -full <= dim < full:
        raise ShapeError(f"{name} {dim} is out of range for a batch of rank {full} (dims -{full}..{full - 1})")
    index = dim % full
    if index == 0 and not batch:
        raise ShapeError(f"{name} {dim} is the batch dimension; count dims as torch does, the batch is 0")
    return index - 1


@dataclass(frozen=True)
class ModuleCall:
    """`cls(*args, **kwargs)`: how a kind makes its module, kept as data so that it can also be written as code."""

    cls: type[nn.Module]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        return self.cls(*self.args, **self.kwargs)


def call(cls: type[nn.Module], *args: Any, **kwargs: Any) -> ModuleCall:
    return ModuleCall(cls, args, kwargs)


_RANK_NAMES = {
    1: "a vector (features)",
    2: "a sequence (length×features)",
    3: "an image (channels×height×width)",
}


def rank_name(rank: int) -> str:
    return _RANK_NAMES.get(rank, f"a rank-{rank}")


class LayerSpec(BaseModel):
    """Base of every layer kind. Subclasses set `kind` to a Literal default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    # Ranks of one example this kind accepts (1: features, 2: tokens×features, 3: channels×height×width);
    # None: any rank.
    ranks: ClassVar[tuple[int, ...] | None] = None
    rank_hint: ClassVar[str] = ""
    # The attribute name of its module in the compiled network (numbered when a scope has several).
    attr: ClassVar[str] = ""
    # PyTorch's name for it (`ReLU`, `Conv2d`): accepted as an alias of the kind in specs.
    torch_name: ClassVar[str] = ""
    # A learned tensor of its own (no module): the network holds it as a parameter of the enclosing module.
    is_tensor: ClassVar[bool] = False

    def args(self) -> dict[str, Any]:
        """The arguments as written (without `kind`)."""
        return self.model_dump(exclude={"kind"})

    def check_rank(self, shape: Shape) -> None:
        if self.ranks is not None and len(shape) not in self.ranks:
            wanted = " or ".join(rank_name(r) for r in self.ranks)
            raise ShapeError(f"expects {wanted} input, got {format_shape(shape)}{self.rank_hint}")

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        return shape

    def num_params(self, shape: Shape) -> int:
        return 0

    def macs(self, shape: Shape, out: Shape) -> int:
        return 0

    def saved_for_backward(self, run: Run) -> Tensor:
        """Memory: replay the forward on `run.input` (symbolic, see layers/saved.py), mark with `run.save(...)`
        what autograd keeps for backward, and return the output. Default: saves nothing, a new output."""
        return run.output()

    def module_call(self, shape: Shape) -> ModuleCall:
        """The torch module for an input of `shape`, as a constructor call (export prints it as code)."""
        raise NotImplementedError

    def build(self, shape: Shape) -> nn.Module:
        return self.module_call(shape).build()

    def make_tensor(self, shape: Shape) -> torch.Tensor:
        """For tensor kinds (`is_tensor`): the initial value of the learned tensor."""
        raise NotImplementedError


LAYER_KINDS: dict[str, type[LayerSpec]] = {}


def register(cls: type[LayerSpec]) -> type[LayerSpec]:
    """Add a layer kind to the language under the default of its `kind` field."""
    name = cls.model_fields["kind"].default
    assert isinstance(name, str) and name not in LAYER_KINDS, name
    LAYER_KINDS[name] = cls
    return cls


def argument_names(cls: type[BaseModel]) -> list[str]:
    """The arguments of a kind (or composite), in the order they are declared."""
    return [name for name in cls.model_fields if name != "kind"]


def can_be_bare(cls: type[BaseModel]) -> bool:
    """True if the kind can be written as a bare name (`- relu`)."""
    return all(not cls.model_fields[name].is_required() for name in argument_names(cls))


def check_declared(name: str, declared: int | None, inferred: int) -> None:
    """A size the spec wrote although it could be inferred must match the inferred one."""
    if declared is not None and declared != inferred:
        raise ShapeError(f"{name} is {declared} but the input has {inferred}")


def count(shape: Shape) -> int:
    return math.prod(shape)


# --- merges: several tensors in, one out ---------------------------------------------------


class MergeMismatch(ShapeError):
    """Inputs `first` and `second` of a merge cannot be combined; the walker names and shows both."""

    def __init__(self, first: int, second: int, reason: str) -> None:
        super().__init__(reason)
        self.first, self.second, self.reason = first, second, reason


class MergeSpec(BaseModel):
    """Base of every merge kind: how the outputs of parallel branches become one tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str

    def args(self) -> dict[str, Any]:
        return self.model_dump(exclude={"kind"})

    def output_shape(self, shapes: list[Shape]) -> Shape:
        raise NotImplementedError

    def elementwise_ops(self, shapes: list[Shape], out: Shape) -> int:
        """Element-wise operations (one add or multiply per output element and extra input); not MACs."""
        return (len(shapes) - 1) * count(out)

    def macs(self, shapes: list[Shape], out: Shape) -> int:
        """Multiply-accumulates (a matmul of two computed tensors); element-wise merges have none."""
        return 0

    def saved_for_backward(self, run: Run) -> Tensor:
        """Memory, as LayerSpec's (`run.inputs` are the branch outputs). Default: saves nothing."""
        return run.pointwise(*run.inputs)

    def build(self) -> Combine:
        """The function that combines the list of branch outputs (plain, so torch.compile traces it)."""
        raise NotImplementedError

    def code(self, names: list[str]) -> str:
        """The same combination as a Python expression over tensors `names` (for `netspec export`)."""
        raise NotImplementedError


MERGE_KINDS: dict[str, type[MergeSpec]] = {}


def register_merge(cls: type[MergeSpec]) -> type[MergeSpec]:
    name = cls.model_fields["kind"].default
    assert isinstance(name, str) and name not in MERGE_KINDS and name not in LAYER_KINDS, name
    MERGE_KINDS[name] = cls
    return cls


def kind_aliases() -> dict[str, str]:
    """Other spellings people type for a kind, lower-cased: PyTorch's class names (`relu` for `ReLU`,
    `nn.ReLU`, `Relu`), and the kinds themselves in any case."""
    aliases: dict[str, str] = {}
    for name, cls in LAYER_KINDS.items():
        aliases[name.lower()] = name
        if cls.torch_name:
            aliases.setdefault(cls.torch_name.lower(), name)
    for name in MERGE_KINDS:
        aliases[name.lower()] = name
    return aliases


def resolve_alias(name: str) -> str | None:
    """The kind that `name` means, if it is another spelling of one (`nn.ReLU`, `ReLU`, `Relu` -> `relu`)."""
    for prefix in ("torch.nn.", "nn."):
        name = name.removeprefix(prefix)
    return kind_aliases().get(name.lower())
