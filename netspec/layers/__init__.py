"""The layer kinds of the spec language, one module per family (as timm's layers/):

- base: what a kind is (`LayerSpec`, `MergeSpec`), the registry, shapes and dimensions;
- convolution, pooling, normalization, dropout, activation, linear;
- reshape: flatten, reshape, permute, transpose, slice, channel shuffle;
- attention: tokens and attention (learned tensors, multi-head and shifted-window attention, relative bias);
- arithmetic: scale, neg, mean, sum;
- merges: concat, add, subtract, multiply, matmul.

To add a kind, write one class in the module of its family and decorate it with ``@register``;
nothing else in netspec needs to change.
"""

from netspec.layers import (
    activation,
    arithmetic,
    attention,
    convolution,
    dropout,
    linear,
    merges,
    normalization,
    pooling,
    reshape,
)
from netspec.layers.base import (
    LAYER_KINDS,
    MERGE_KINDS,
    Combine,
    LayerSpec,
    MergeMismatch,
    MergeSpec,
    ModuleCall,
    Shape,
    ShapeError,
    argument_names,
    axis,
    can_be_bare,
    format_pair,
    format_shape,
    pair,
    rank_name,
    resolve_alias,
)
from netspec.layers.convolution import Conv2d
from netspec.layers.merges import Add

__all__ = [
    "LAYER_KINDS",
    "MERGE_KINDS",
    "Add",
    "Combine",
    "Conv2d",
    "LayerSpec",
    "MergeMismatch",
    "MergeSpec",
    "ModuleCall",
    "Shape",
    "ShapeError",
    "activation",
    "argument_names",
    "arithmetic",
    "attention",
    "axis",
    "can_be_bare",
    "convolution",
    "dropout",
    "format_pair",
    "format_shape",
    "linear",
    "merges",
    "normalization",
    "pair",
    "pooling",
    "rank_name",
    "reshape",
    "resolve_alias",
]
