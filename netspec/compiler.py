"""Stage 4: inferred shapes -> a torch `nn.Module`.

The module mirrors the spec: a flat spec becomes an `nn.Sequential` whose
state_dict keys are the same as a hand-written `nn.Sequential` of the same layers
("0.weight", "3.bias", ...), blocks and repeat copies become nested Sequentials, and
residual blocks become `Residual` modules. Parameters appear in spec order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from netspec.errors import CheckpointError
from netspec.shapes import LayerInfo, NetShape, ShapedNode, ShapedResidual, infer_shapes
from netspec.spec import Spec


class Residual(nn.Module):
    """body(x) + shortcut(x)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class SpecNet(nn.Sequential):
    """The compiled network; `.net_shape` holds the inferred shapes it was built from."""

    def __init__(self, net_shape: NetShape) -> None:
        super().__init__(*(_build(child) for child in net_shape.root.children))
        self.net_shape = net_shape

    @property
    def spec(self) -> Spec:
        return self.net_shape.spec


def _build(node: ShapedNode) -> nn.Module:
    if isinstance(node, LayerInfo):
        return node.layer.build(node.input_shape)
    if isinstance(node, ShapedResidual):
        shortcut = _build(node.shortcut) if node.shortcut is not None else nn.Identity()
        return Residual(_build(node.body), shortcut)
    return nn.Sequential(*(_build(child) for child in node.children))


def leaf_modules(model: SpecNet) -> list[tuple[LayerInfo, nn.Module]]:
    """Each inferred layer paired with the module built for it, in spec order."""
    pairs: list[tuple[LayerInfo, nn.Module]] = []

    def walk(node: ShapedNode, module: nn.Module) -> None:
        if isinstance(node, LayerInfo):
            pairs.append((node, module))
        elif isinstance(node, ShapedResidual):
            assert isinstance(module, Residual)
            walk(node.body, module.body)
            if node.shortcut is not None:
                walk(node.shortcut, module.shortcut)
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
