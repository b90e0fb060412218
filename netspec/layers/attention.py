"""Tokens and attention: learned tensors, multi-head self-attention, Swin's shifted-window attention.

Tokens are L×D per example (a sequence of L vectors of D features); Swin works on channels-last
images H×W×C. A `parameter` is a learned tensor used as a merge branch: ViT's class token
(concat along the tokens), its position embedding (add) and ConvNeXt's layer scale (multiply)
are one line each. It belongs to the enclosing module, so it comes before that module's
children in the state_dict, where torchvision has it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from pydantic import Field, model_validator
from torch import nn

from netspec.layers.activation import softmax
from netspec.layers.base import (
    Flag,
    LayerSpec,
    ModuleCall,
    NonNegativeOrPair,
    Probability,
    Shape,
    ShapeError,
    Size,
    SizeOrPair,
    call,
    check_declared,
    count,
    format_shape,
    pair,
    register,
)
from netspec.layers.dropout import dropout
from netspec.layers.linear import linear, matmul
from netspec.layers.saved import Run, Tensor


@register
class Parameter(LayerSpec):
    """A learned tensor of `shape` (one example's; it is expanded over the batch), read as a merge branch.

    Stored as (1, *shape), as torchvision stores ViT's class token and position embedding, or exactly as
    `shape` with `batch_dim: false` (ConvNeXt's C×1×1 layer scale). With `view`, it is stored exactly as
    `shape` and used as `view` (the same number of values): timm's 1-D layer scale `(dim,)` is
    `{shape: [dim], view: [dim, 1, 1]}` over an image, `{shape: [dim], view: [1, dim]}` over tokens.
    """

    kind: Literal["parameter"] = "parameter"
    shape: Annotated[list[Size], Field(min_length=1)]
    view: Annotated[list[Size], Field(min_length=1)] | None = None
    batch_dim: Flag = True
    init: Literal["zeros", "ones", "constant", "normal", "trunc_normal", "uniform"] = "zeros"
    value: float = 0.0  # for init: constant
    std: Annotated[float, Ge(0.0)] = 0.02  # for normal and trunc_normal (truncated at ±2 std)
    attr: ClassVar[str] = "param"
    is_tensor: ClassVar[bool] = True

    @model_validator(mode="after")
    def _view_keeps_the_values(self) -> Parameter:
        if self.view is not None and count(tuple(self.view)) != count(tuple(self.shape)):
            raise ValueError(
                f"view {format_shape(tuple(self.view))} ({count(tuple(self.view))} values) does not hold the "
                f"{count(tuple(self.shape))} values of shape {format_shape(tuple(self.shape))}"
            )
        if self.view is not None and "batch_dim" in self.model_fields_set:
            raise ValueError("batch_dim does not apply with view: the tensor is stored exactly as shape")
        return self

    def stored_shape(self) -> Shape:
        if self.view is not None:
            return tuple(self.shape)
        return (1, *self.shape) if self.batch_dim else tuple(self.shape)

    def use_shape(self) -> Shape:
        """One example's shape as the network reads it."""
        return tuple(self.view if self.view is not None else self.shape)

    def output_shape(self, shape: Shape) -> Shape:
        return self.use_shape()

    def num_params(self, shape: Shape) -> int:
        return count(tuple(self.shape))

    def saved_for_backward(self, run: Run) -> Tensor:
        use = self.use_shape()
        return run.param(self.stored_shape()).view(1, *use).expand(run.batch, *use)  # a view of the parameter

    def make_tensor(self, shape: Shape) -> torch.Tensor:
        tensor = torch.empty(self.stored_shape())
        if self.init in ("zeros", "ones", "constant"):
            return tensor.fill_({"zeros": 0.0, "ones": 1.0, "constant": self.value}[self.init])
        if self.init == "normal":
            return nn.init.normal_(tensor, std=self.std)
        if self.init == "trunc_normal":
            return nn.init.trunc_normal_(tensor, std=self.std, a=-2 * self.std, b=2 * self.std)
        return nn.init.uniform_(tensor)


class SelfAttention(nn.Module):
    """Multi-head self-attention over N×...×L×D tokens (leading group dimensions share the weights),
    computed with F.scaled_dot_product_attention.

    The parameters are nn.MultiheadAttention's (packed q/k/v projection `in_proj_weight`/`in_proj_bias`,
    then `out_proj`), so torchvision's ViT weights load as they are (and timm's `qkv` and `proj`, by position).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention initializes them
        if bias:
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        length, dim = shape[-2], shape[-1]
        x = x.reshape(-1, length, dim)  # groups of tokens (MobileViT's patches) join the batch
        n = x.shape[0]
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, dim)).view(shape)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, dropout={self.dropout}"


@register
class MultiheadAttention(LayerSpec):
    """Self-attention over a sequence of tokens (L×D), or over groups of them with shared weights (G×L×D, any
    number of leading group dimensions); D is inferred and must divide by num_heads."""

    kind: Literal["multihead_attention"] = "multihead_attention"
    num_heads: Size
    embed_dim: Size | None = None
    dropout: Probability = 0.0
    bias: Flag = True
    rank_hint: ClassVar[str] = "; make tokens first (flatten: {start_dim: 2} and transpose: {dim0: 1, dim1: 2})"
    attr: ClassVar[str] = "attn"
    torch_name: ClassVar[str] = "MultiheadAttention"

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) < 2:
            raise ShapeError(
                f"expects tokens (L×D, or G×L×D for groups of tokens), got {format_shape(shape)}{self.rank_hint}"
            )
        check_declared("embed_dim", self.embed_dim, shape[-1])
        if shape[-1] % self.num_heads:
            raise ShapeError(f"{shape[-1]} features are not divisible by num_heads {self.num_heads}")
        return shape

    def num_params(self, shape: Shape) -> int:
        d = shape[-1]
        return 4 * d * d + (4 * d if self.bias else 0)

    def macs(self, shape: Shape, out: Shape) -> int:
        groups, length, d = count(shape[:-2]), shape[-2], shape[-1]
        return groups * (4 * length * d * d + 2 * length * length * d)  # q/k/v and output projections, QKᵀ, AV

    def saved_for_backward(self, run: Run) -> Tensor:
        """As SelfAttention.forward: groups join the batch (a view, or a copy of a non-contiguous input); q, k
        and v are views of one projection; the fused kernels' output is token-major, so the output projection
        reads a view of it."""
        (length, d), heads = run.shape[-2:], self.num_heads
        x = run.reshape(run.input, -1, length, d)
        n = x.shape[0]
        qkv = linear(run, x, 3 * d).view(n, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        out = scaled_dot_product_attention(run, qkv.select(0), qkv.select(0, 1), qkv.select(0, 2), self.dropout)
        return linear(run, run.reshape(out.transpose(1, 2), n, length, d), d).view(run.batch, *run.shape)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(SelfAttention, shape[-1], self.num_heads, self.dropout, self.bias)


@register
class ShiftedWindowAttention(LayerSpec):
    """Swin's window attention with relative position bias over a channels-last image H×W×C, cyclically
    shifted by `shift_size` (torchvision's own ShiftedWindowAttention module)."""

    kind: Literal["shifted_window_attention"] = "shifted_window_attention"
    num_heads: Size
    window_size: SizeOrPair = 7
    shift_size: NonNegativeOrPair = 0
    attention_dropout: Probability = 0.0
    dropout: Probability = 0.0
    qkv_bias: Flag = True
    proj_bias: Flag = True
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    rank_hint: ClassVar[str] = "; Swin attends over channels-last images (permute: {dims: [0, 2, 3, 1]})"
    attr: ClassVar[str] = "attn"
    torch_name: ClassVar[str] = "ShiftedWindowAttention"

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        if shape[2] % self.num_heads:
            raise ShapeError(f"{shape[2]} channels are not divisible by num_heads {self.num_heads}")
        return shape

    def num_params(self, shape: Shape) -> int:
        c = shape[2]
        wh, ww = pair(self.window_size)
        table = (2 * wh - 1) * (2 * ww - 1) * self.num_heads
        return 3 * c * c + c * c + (3 * c if self.qkv_bias else 0) + (c if self.proj_bias else 0) + table

    def macs(self, shape: Shape, out: Shape) -> int:
        h, w, c = shape
        wh, ww = pair(self.window_size)
        tokens = math.ceil(h / wh) * wh * math.ceil(w / ww) * ww  # padded to whole windows
        return 4 * tokens * c * c + 2 * tokens * wh * ww * c  # projections, QKᵀ and AV within each window

    def saved_for_backward(self, run: Run) -> Tensor:
        """As torchvision's shifted_window_attention: pad (and roll) the image, partition it into windows
        (copies), attention with matmul and softmax inside each window, then the reverse moves."""
        n, (h, w, c), heads = run.batch, run.shape, self.num_heads
        (wh, ww), (sh, sw) = pair(self.window_size), pair(self.shift_size)
        ph, pw = -(-h // wh) * wh, -(-w // ww) * ww
        shifted = (sh if wh < ph else 0) + (sw if ww < pw else 0) > 0  # no shift where one window covers it all
        windows, tokens = n * (ph // wh) * (pw // ww), wh * ww
        run.buffer((tokens * tokens,), "int64")  # relative_position_index
        x = run.new((n, ph, pw, c))  # F.pad copies even when it adds nothing
        x = run.new(x.shape) if shifted else x  # torch.roll
        x = run.reshape(x.view(n, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5), windows, tokens, c)
        qkv = linear(run, x, 3 * c).view(windows, tokens, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.select(0), qkv.select(0, 1), qkv.select(0, 2)
        attn = matmul(run, run.pointwise(q), run.lower(k.transpose(-2, -1)))  # q scaled
        bias = run.new((1, heads, tokens, tokens), "float32")  # gathered from the table: float32 under AMP
        attn = run.pointwise(attn, bias.expand(*attn.shape))
        if shifted:  # the mask is added to a new tensor; nothing saved
            attn = run.pointwise(attn)
        attn = dropout(run, softmax(run, attn), self.attention_dropout)
        x = matmul(run, run.lower(attn), run.lower(v))
        x = dropout(run, linear(run, run.reshape(x.transpose(1, 2), windows, tokens, c), c), self.dropout)
        x = run.reshape(x.view(n, ph // wh, pw // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5), n, ph, pw, c)
        x = run.new(x.shape, x.dtype) if shifted else x  # torch.roll back
        return run.contiguous(x.narrow(1, h).narrow(2, w))

    def module_call(self, shape: Shape) -> ModuleCall:
        from torchvision.models.swin_transformer import ShiftedWindowAttention as TorchvisionSWA

        return call(
            TorchvisionSWA,
            shape[2],
            list(pair(self.window_size)),
            list(pair(self.shift_size)),
            self.num_heads,
            qkv_bias=self.qkv_bias,
            proj_bias=self.proj_bias,
            attention_dropout=self.attention_dropout,
            dropout=self.dropout,
        )


def scaled_dot_product_attention(run: Run, q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
    """F.scaled_dot_product_attention on N×heads×L×E. A fused kernel (CUDA's flash or memory-efficient
    attention; CPU's flash kernel, which takes no dropout) saves q, k, v, its output (token-major) and a
    float32 log-sum-exp per query. CPU training with dropout runs the math path in float32: it keeps the
    scaled q and k, the attention matrix, its dropout mask and the dropped matrix, and v as a matrix."""
    q, k, v = run.lower(q), run.lower(k), run.lower(v)
    n, heads, length, e = q.shape
    if run.device == "cuda" or dropout_p == 0 or not run.training:
        out = run.new((n, length, heads, e), q.dtype).transpose(1, 2)
        run.save(q, k, v, out, run.new((n, heads, length), "float32", requires_grad=False))
        return out
    dtype = q.dtype
    q, k, v = run.to(q, "float32"), run.to(k, "float32"), run.to(v, "float32")
    attn = matmul(run, run.pointwise(q), run.pointwise(k).transpose(-2, -1))
    return run.to(matmul(run, dropout(run, softmax(run, attn), dropout_p), v), dtype)


@register
class RelativeAttention(LayerSpec):
    """MaxViT's attention within partitions: G groups of P tokens (G×P×D), heads of `head_dim` features and a
    learned relative position bias over the √P×√P window (torchvision's RelativePositionalMultiHeadAttention)."""

    kind: Literal["relative_attention"] = "relative_attention"
    head_dim: Size = 32
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    rank_hint: ClassVar[str] = "; partition the image into groups of tokens first (reshape and permute)"
    attr: ClassVar[str] = "attn"
    torch_name: ClassVar[str] = "RelativePositionalMultiHeadAttention"

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        _, tokens, d = shape
        if d % self.head_dim:
            raise ShapeError(f"{d} features are not divisible by head_dim {self.head_dim}")
        if math.isqrt(tokens) ** 2 != tokens:
            raise ShapeError(f"{tokens} tokens per group are not a square window")
        return shape

    def num_params(self, shape: Shape) -> int:
        _, tokens, d = shape
        table = (2 * math.isqrt(tokens) - 1) ** 2 * (d // self.head_dim)
        return 4 * d * d + 4 * d + table

    def macs(self, shape: Shape, out: Shape) -> int:
        groups, tokens, d = shape
        return groups * (4 * tokens * d * d + 2 * tokens * tokens * d)  # projections, QKᵀ and AV in each group

    def saved_for_backward(self, run: Run) -> Tensor:
        """As torchvision's forward: the packed q/k/v projection, q·kᵀ and attn·v as einsums (bmm on copies of
        the permuted heads), the relative position bias added before the softmax, the merge projection."""
        n, (groups, tokens, d) = run.batch, run.shape
        heads, dh = d // self.head_dim, self.head_dim
        run.buffer((tokens * tokens,), "int64")  # relative_position_index
        qkv = linear(run, run.input, 3 * d)
        q, k, v = (qkv.narrow(-1, d).view(n, groups, tokens, heads, dh).permute(0, 1, 3, 2, 4) for _ in range(3))
        k = run.pointwise(k)  # scaled
        attn = matmul(run, run.lower(q), run.lower(k.transpose(-2, -1)))
        bias = run.new((1, heads, tokens, tokens), "float32")  # gathered from the table
        attn = softmax(run, run.pointwise(attn, bias.expand(*attn.shape)))
        out = matmul(run, run.lower(attn), run.lower(v))
        return linear(run, run.reshape(out.permute(0, 1, 3, 2, 4), n, groups, tokens, d), d)

    def module_call(self, shape: Shape) -> ModuleCall:
        from torchvision.models.maxvit import RelativePositionalMultiHeadAttention

        return call(RelativePositionalMultiHeadAttention, shape[2], self.head_dim, shape[1])


class LevitBiasModule(nn.Module):
    """LeViT's attention bias: a learned table `attention_biases` (heads × resolution²) read at the fixed index
    |Δrow| · resolution + |Δcol| between each query and each key of a resolution×resolution grid (queries every
    `stride`-th point: LeViT's subsampling attention), added to the attention logits heads×queries×keys.
    The names and shapes are timm's (the index is a buffer that is not saved, as timm's)."""

    def __init__(self, heads: int, resolution: int, stride: int = 1) -> None:
        super().__init__()
        self.attention_biases = nn.Parameter(torch.zeros(heads, resolution * resolution))
        keys = torch.stack(torch.meshgrid(torch.arange(resolution), torch.arange(resolution), indexing="ij"))
        queries = keys[:, ::stride, ::stride].flatten(1)
        offsets = (queries[:, :, None] - keys.flatten(1)[:, None, :]).abs()
        self.register_buffer("attention_bias_idxs", offsets[0] * resolution + offsets[1], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention_biases[:, self.attention_bias_idxs]


class SwinBiasModule(nn.Module):
    """Swin's relative position bias: a learned table `relative_position_bias_table` ((2·window − 1)² × heads)
    read at the index of (Δrow, Δcol) between the window's tokens, added to the logits heads×tokens×tokens
    (torchvision's and timm's names and shapes; the index is a buffer)."""

    def __init__(self, heads: int, resolution: int, stride: int = 1) -> None:
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * resolution - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(resolution), torch.arange(resolution), indexing="ij"))
        offsets = (coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]) + resolution - 1
        self.register_buffer(
            "relative_position_index", offsets[0] * (2 * resolution - 1) + offsets[1], persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return x + bias.view(tokens, tokens, -1).permute(2, 0, 1)


@dataclass(frozen=True)
class BiasRule:
    """How a relative-bias table is laid out and indexed."""

    module: type[nn.Module]
    table: Callable[[int, int], Shape]  # (heads, resolution) -> the table's shape
    tokens: Callable[[int, int], tuple[int, int]]  # (resolution, stride) -> (queries, keys)
    strided: bool  # whether queries may be subsampled


BIAS_RULES = {
    "levit": BiasRule(LevitBiasModule, lambda h, r: (h, r * r), lambda r, s: (math.ceil(r / s) ** 2, r * r), True),
    "swin": BiasRule(SwinBiasModule, lambda h, r: ((2 * r - 1) ** 2, h), lambda r, s: (r * r, r * r), False),
}


@register
class RelativeBias(LayerSpec):
    """Adds a learned bias, looked up by a fixed relative-position index, to attention logits heads×queries×keys
    (heads inferred): `rule: levit` (LeViT's and EfficientFormer's attention_biases[:, attention_bias_idxs],
    with `stride` for LeViT's subsampling attention) or `rule: swin` (Swin's relative position bias table over a
    resolution×resolution window). The table is named and shaped as timm's."""

    kind: Literal["relative_bias"] = "relative_bias"
    resolution: Size
    rule: Literal["levit", "swin"] = "levit"
    stride: Size = 1
    ranks: ClassVar[tuple[int, ...] | None] = (3,)
    rank_hint: ClassVar[str] = "; it adds to attention logits heads×queries×keys (matmul of q and k)"
    attr: ClassVar[str] = "bias"

    def output_shape(self, shape: Shape) -> Shape:
        self.check_rank(shape)
        rule = BIAS_RULES[self.rule]
        if self.stride != 1 and not rule.strided:
            raise ShapeError(f"rule {self.rule} takes no stride (got {self.stride})")
        queries, keys = rule.tokens(self.resolution, self.stride)
        if shape[1:] != (queries, keys):
            raise ShapeError(
                f"resolution {self.resolution}{f' with stride {self.stride}' if self.stride != 1 else ''} gives "
                f"{queries} queries × {keys} keys, but the logits are {format_shape(shape)} (heads×queries×keys)"
            )
        return shape

    def num_params(self, shape: Shape) -> int:
        return count(BIAS_RULES[self.rule].table(shape[0], self.resolution))

    def saved_for_backward(self, run: Run) -> Tensor:
        """The lookup makes a new heads×queries×keys float32 tensor (its backward needs only the index, a
        buffer); the add saves nothing."""
        queries, keys = run.shape[1:]
        run.buffer((queries * keys,), "int64")
        bias = run.new((1, *run.shape), "float32")
        return run.pointwise(run.input, bias.expand(*run.input.shape))

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(BIAS_RULES[self.rule].module, shape[0], self.resolution, self.stride)
