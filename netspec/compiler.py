"""Stage 4: inferred shapes -> a torch `nn.Module`.

The module mirrors the spec: a flat spec becomes an `nn.Sequential` whose
state_dict keys are the same as a hand-written `nn.Sequential` of the same layers
("0.weight", "3.bias", ...), blocks and repeat copies become nested Sequentials, a
sequence with taps a `Chain` (a Sequential that also keeps the outputs later entries
read), and each merge (and residual) one `Merge` module whose children are its
branches ("body"/"shortcut" for a residual). Parameters appear in reading order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from netspec.errors import CheckpointError
from netspec.fileio import load_checkpoint
from netspec.layers import Combine
from netspec.shapes import LayerInfo, NetShape, ShapedMerge, ShapedNode, infer_shapes
from netspec.spec import Spec


class Chain(nn.Sequential):
    """An nn.Sequential whose children may also read earlier outputs (taps).

    `sources[k]` is None when child k reads the previous output, else the positions of
    its inputs among the chain's values (0: the chain's input, j + 1: child j's output).
    Only the values that a later child reads are kept.
    """

    def __init__(self, *modules: nn.Module, sources: list[tuple[int, ...] | None] | None = None) -> None:
        super().__init__(*modules)
        self.sources = sources if sources is not None and any(s is not None for s in sources) else None
        self.keep = frozenset(j for s in self.sources or [] if s is not None for j in s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sources is None:
            for module in self:
                x = module(x)
            return x
        saved = {0: x} if 0 in self.keep else {}
        for k, (module, source) in enumerate(zip(self, self.sources, strict=True)):
            x = module(x) if source is None else module(*[saved[j] for j in source])
            if k + 1 in self.keep:
                saved[k + 1] = x
        return x


class Merge(nn.Module):
    """Parallel branches (its children, in reading order) and the function that combines their outputs.

    Called with one input, every branch reads it; with several, branch i reads input i.
    """

    def __init__(self, branches: dict[str, nn.Module], combine: Combine, kind: str) -> None:
        super().__init__()
        for name, branch in branches.items():
            self.add_module(name, branch)
        self.combine = combine
        self.kind = kind

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) == 1:
            x = inputs[0]
            return self.combine([branch(x) for branch in self._modules.values()])
        return self.combine([branch(x) for branch, x in zip(self._modules.values(), inputs, strict=True)])

    def extra_repr(self) -> str:
        return self.kind


class SpecNet(Chain):
    """The compiled network; `.net_shape` holds the inferred shapes it was built from."""

    def __init__(self, net_shape: NetShape) -> None:
        root = net_shape.root
        super().__init__(*(_build(child) for child in root.children), sources=root.sources)
        self.net_shape = net_shape

    @property
    def spec(self) -> Spec:
        return self.net_shape.spec


def _build(node: ShapedNode) -> nn.Module:
    if isinstance(node, LayerInfo):
        return node.layer.build(node.input_shape)  # type: ignore[call-arg]
    if isinstance(node, ShapedMerge):
        branches = {name: _build(branch) for name, branch in zip(node.names, node.branches, strict=True)}
        return Merge(branches, node.info.layer.build(), node.info.kind)  # type: ignore[call-arg]
    if node.is_chain:
        return nn.Sequential(*(_build(child) for child in node.children))
    return Chain(*(_build(child) for child in node.children), sources=node.sources)


def leaf_modules(model: SpecNet) -> list[tuple[LayerInfo, nn.Module]]:
    """Each row of the inferred network (layers and merges) paired with its module, in reading order."""
    pairs: list[tuple[LayerInfo, nn.Module]] = []

    def walk(node: ShapedNode, module: nn.Module) -> None:
        if isinstance(node, LayerInfo):
            pairs.append((node, module))
        elif isinstance(node, ShapedMerge):
            pairs.append((node.info, module))
            for name, branch in zip(node.names, node.branches, strict=True):
                walk(branch, getattr(module, name))
        else:
            for child, sub in zip(node.children, module.children(), strict=True):
                walk(child, sub)

    walk(model.net_shape.root, model)
    return pairs


def build(spec: Spec | NetShape | str | Path, *, compile: bool = False, **compile_kwargs: object) -> nn.Module:
    """Compile a spec (or a path to one) into a torch module.

    With `compile=True` the module is wrapped by `torch.compile(**compile_kwargs)`;
    the original stays reachable as `._orig_mod`.
    """
    net_shape = spec if isinstance(spec, NetShape) else infer_shapes(spec)
    model: nn.Module = SpecNet(net_shape)
    if compile:
        model = torch.compile(model, **compile_kwargs)  # type: ignore[assignment]
    return model


def transfer_state_dict(source: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Load a state_dict from a differently-named model whose tensors are in the same order.

    This is how weights of a hand-written textbook model load into its spec: same
    parameter shapes in the same order, whatever the module names.
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise CheckpointError(f"the source has {len(source)} tensors but the model has {len(target)}")
    mapped = {}
    for (src_key, tensor), (key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise CheckpointError(
                f"tensor {src_key} has shape {tuple(tensor.shape)} but {key} needs {tuple(expected.shape)}"
            )
        mapped[key] = tensor
    model.load_state_dict(mapped)


def load_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Load the model weights of a netspec checkpoint (a run's last.pt or best.pt) into `model`."""
    ckpt = load_checkpoint(checkpoint)
    name = getattr(model, "spec", None)
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError) as exc:
        what = f"spec {name.name}" if name is not None else "the model"
        raise CheckpointError(f"{checkpoint}: does not fit {what}: {str(exc).splitlines()[0]}") from None
