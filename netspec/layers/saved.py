"""What autograd saves for backward: the vocabulary in which each layer kind declares it.

A kind's ``saved_for_backward(run)`` replays its forward on symbolic tensors (shape, strides, dtype
and the storage they live in; no data) and marks with ``run.save(...)`` the tensors PyTorch's
derivative formulas keep until the backward pass. It returns its output. Views (permute, slices,
``reshape`` where torch can view) share their base's storage, so the memory model counts a storage
once however many layers save it or a view of it: a convolution's output that the following
batch norm saves, a gate that `multiply` and `sigmoid` both keep.

The rules follow PyTorch 2.x (tools/autograd/derivatives.yaml and the kernels' own choices, checked
against ``torch.autograd.graph.saved_tensors_hooks`` in tests/test_memory.py); where they differ by
device (dropout masks, attention kernels, autocast's float32 list), `Run.device` says which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int64": 8, "bool": 1}
LOW_PRECISION = {"bf16": "bfloat16", "fp16": "float16"}

# What a storage holds. Saved activations are the activations, the input batch and autocast's weight copies that
# autograd keeps; parameters and buffers are the module's state. Autocast caches its weight copies until the
# autocast region ends, so they stay alive through a whole forward.
ACTIVATION, INPUT, WEIGHT_CAST, PARAMETER, BUFFER = "activation", "input", "weight cast", "parameter", "buffer"


@dataclass(eq=False)
class Storage:
    """One allocation; tensors that are views of each other share it (identity, not value, matters)."""

    nbytes: int
    role: str = ACTIVATION


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def view_strides(shape: Sequence[int], strides: Sequence[int], new_shape: Sequence[int]) -> tuple[int, ...] | None:
    """The strides of `new_shape` as a view of a tensor of `shape`/`strides`, or None when torch's `view`
    would refuse (ATen's computeStride: each run of merged dimensions must be contiguous in memory)."""
    if math.prod(shape) == 0 or not shape:
        return contiguous_strides(new_shape)
    new_strides = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_base_stride = strides[-1]
    tensor_numel = view_numel = 1
    for tensor_d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[tensor_d]
        if tensor_d == 0 or (shape[tensor_d - 1] != 1 and strides[tensor_d - 1] != tensor_numel * chunk_base_stride):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_base_stride
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if tensor_d > 0:
                chunk_base_stride = strides[tensor_d - 1]
                tensor_numel = view_numel = 1
    return tuple(new_strides) if view_d == -1 else None


@dataclass(frozen=True, eq=False)
class Tensor:
    """A symbolic tensor: the batch is dimension 0 of `shape`, as in torch."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    storage: Storage
    dtype: str = "float32"
    requires_grad: bool = True

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]

    def is_contiguous(self) -> bool:
        """torch's rule: dimensions of size 1 do not count."""
        expected = 1
        for size, stride in reversed(list(zip(self.shape, self.strides, strict=True))):
            if size != 1:
                if stride != expected:
                    return False
                expected *= size
        return True

    def is_dense(self) -> bool:
        """Non-overlapping and dense (torch's is_non_overlapping_and_dense): a permutation of a contiguous tensor."""
        dims = sorted((s, n) for n, s in zip(self.shape, self.strides, strict=True) if n != 1)
        expected = 1
        for stride, size in dims:
            if stride != expected:
                return False
            expected *= size
        return True

    def is_channels_last(self) -> bool:
        """torch's suggest_memory_format() == channels_last for a 4-d tensor (is_channels_last_strides_2d_s4:
        strides in N, H, W, C order, ambiguous size-1 cases falling back to contiguous)."""
        if self.dim != 4 or self.strides[1] == 0:
            return False
        smallest = 0
        for d in (1, 3, 2, 0):
            if self.shape[d] == 0 or self.strides[d] < smallest or (d == 0 and smallest == self.strides[1]):
                return False
            smallest = self.strides[d] * (self.shape[d] if self.shape[d] > 1 else 1)
        return True

    def _as(self, shape: Sequence[int], strides: Sequence[int]) -> Tensor:
        return Tensor(tuple(shape), tuple(strides), self.storage, self.dtype, self.requires_grad)

    def permute(self, *dims: int) -> Tensor:
        return self._as([self.shape[d] for d in dims], [self.strides[d] for d in dims])

    def transpose(self, a: int, b: int) -> Tensor:
        dims = list(range(self.dim))
        dims[a], dims[b] = dims[b], dims[a]
        return self.permute(*dims)

    def select(self, dim: int, index: int = 0) -> Tensor:
        dim %= self.dim
        return self._as(self.shape[:dim] + self.shape[dim + 1 :], self.strides[:dim] + self.strides[dim + 1 :])

    def narrow(self, dim: int, length: int, step: int = 1) -> Tensor:
        dim %= self.dim
        shape, strides = list(self.shape), list(self.strides)
        shape[dim], strides[dim] = length, strides[dim] * step
        return self._as(shape, strides)

    def expand(self, *shape: int) -> Tensor:
        """Broadcast to `shape` (stride 0 on new or size-1 dimensions), as torch's expand."""
        pad = len(shape) - self.dim
        sizes, strides = (1,) * pad + self.shape, (0,) * pad + self.strides
        return self._as(shape, [0 if n != m else s for n, m, s in zip(shape, sizes, strides, strict=True)])

    def unsqueeze(self, dim: int) -> Tensor:
        dim %= self.dim + 1
        stride = self.strides[dim] * self.shape[dim] if dim < self.dim else 1
        return self._as((*self.shape[:dim], 1, *self.shape[dim:]), (*self.strides[:dim], stride, *self.strides[dim:]))

    def resolve(self, shape: Sequence[int]) -> tuple[int, ...]:
        """`shape` with its -1 filled in."""
        if -1 not in shape:
            return tuple(shape)
        known = math.prod(d for d in shape if d != -1)
        return tuple(self.numel // known if d == -1 else d for d in shape)

    def view(self, *shape: int) -> Tensor:
        new_shape = self.resolve(shape)
        strides = view_strides(self.shape, self.strides, new_shape)
        if strides is None:
            raise ValueError(f"view {new_shape} of {self.shape} with strides {self.strides} is not possible")
        return self._as(new_shape, strides)

    def can_view(self, *shape: int) -> bool:
        return view_strides(self.shape, self.strides, self.resolve(shape)) is not None


@dataclass(frozen=True)
class Settings:
    """What the rules depend on besides shapes."""

    batch: int
    amp: str = "none"  # none, bf16, fp16: autocast's half-precision type
    device: str = "cuda"  # cpu or cuda
    training: bool = True


@dataclass
class Run:
    """One layer running forward: its inputs, and what it creates and saves."""

    inputs: list[Tensor]
    out_shape: tuple[int, ...]  # one example's output shape, from the shape rule
    settings: Settings
    requires_grad: bool = True  # False when no input needs a gradient and the layer has no parameters
    saved: list[Tensor] = field(default_factory=list)
    created: list[Tensor] = field(default_factory=list)  # every new storage, in order
    buffer_bytes: int = 0

    @property
    def input(self) -> Tensor:
        return self.inputs[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """One example's input shape (what the shape rule saw)."""
        return self.input.shape[1:]

    @property
    def batch(self) -> int:
        return self.settings.batch

    @property
    def device(self) -> str:
        return self.settings.device

    @property
    def training(self) -> bool:
        return self.settings.training

    @property
    def low_precision(self) -> str | None:
        return LOW_PRECISION.get(self.settings.amp)

    # --- tensors -----------------------------------------------------------------------------

    def new(
        self,
        shape: Sequence[int],
        dtype: str | None = None,
        like: Tensor | None = None,
        requires_grad: bool | None = None,
    ) -> Tensor:
        """A fresh tensor with a storage of its own; `shape` includes the batch. It is laid out like `like`
        when that has the same shape and is dense (torch's preserve_format), else contiguous."""
        shape = tuple(shape)
        dtype = dtype or (like or self.input).dtype
        strides = like.strides if like is not None and like.shape == shape and like.is_dense() else None
        tensor = Tensor(
            shape,
            strides or contiguous_strides(shape),
            Storage(math.prod(shape) * DTYPE_BYTES[dtype]),
            dtype,
            self.requires_grad if requires_grad is None else requires_grad,
        )
        self.created.append(tensor)
        return tensor

    def output(self, dtype: str | None = None, like: Tensor | None = None) -> Tensor:
        """A fresh tensor of the layer's output shape."""
        return self.new((self.batch, *self.out_shape), dtype, like)

    def param(self, shape: Sequence[int]) -> Tensor:
        shape = tuple(shape)
        return Tensor(shape, contiguous_strides(shape), Storage(math.prod(shape) * 4, PARAMETER))

    def buffer(self, shape: Sequence[int], dtype: str = "float32") -> Tensor:
        """A buffer of the layer's module (batch-norm statistics, index tables): state, not an activation."""
        shape = tuple(shape)
        nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
        self.buffer_bytes += nbytes
        return Tensor(shape, contiguous_strides(shape), Storage(nbytes, BUFFER), dtype, requires_grad=False)

    def save(self, *tensors: Tensor | None) -> None:
        """Mark tensors that autograd keeps for backward (None: an optional argument that is absent)."""
        self.saved.extend(t for t in tensors if t is not None)

    # --- torch's copies and casts ------------------------------------------------------------

    def to(self, x: Tensor, dtype: str) -> Tensor:
        """x.to(dtype): x itself when it already has it, else a copy laid out like x."""
        return x if x.dtype == dtype else self.new(x.shape, dtype, like=x)

    def contiguous(self, x: Tensor) -> Tensor:
        return x if x.is_contiguous() else self.new(x.shape, x.dtype)

    def reshape(self, x: Tensor, *shape: int) -> Tensor:
        """x.reshape(...): a view when torch can make one, else a contiguous copy."""
        return x.view(*shape) if x.can_view(*shape) else self.new(x.resolve(shape), x.dtype)

    def lower(self, x: Tensor) -> Tensor:
        """The input of an op that autocast runs in half precision (convolutions, matmuls, attention): under
        AMP a half-precision copy of a float32 input (which the op then saves), else x."""
        low = self.low_precision
        return self.to(x, low) if low and x.dtype == "float32" else x

    def upcast(self, x: Tensor) -> Tensor:
        """The input of an op that CUDA's autocast runs in float32 (layer and group norm, softmax, softplus):
        a float32 copy of a half-precision input. CPU autocast leaves these ops in the input's type."""
        return self.to(x, "float32") if self.low_precision and self.device == "cuda" else x

    def weight(self, shape: Sequence[int]) -> Tensor:
        """A learned weight as a half-precision op sees it: the parameter, or under AMP autocast's cached
        half-precision copy (an allocation of its own, saved by the op)."""
        w = self.param(shape)
        if not self.low_precision:
            return w
        cast = Tensor(
            w.shape, w.strides, Storage(w.numel * DTYPE_BYTES[self.low_precision], WEIGHT_CAST), self.low_precision
        )
        self.created.append(cast)
        return cast

    def promote(self, *xs: Tensor) -> str:
        """The result type of an element-wise op on `xs` (float32 wins over half precision)."""
        dtypes = {x.dtype for x in xs}
        return "float32" if "float32" in dtypes else xs[0].dtype

    def pointwise(self, *xs: Tensor, dtype: str | None = None) -> Tensor:
        """The result of an element-wise op (broadcast over `xs`), laid out like its first full-size dense input."""
        shape = tuple(max(sizes) for sizes in zip(*(x.shape for x in xs), strict=True))
        like = next((x for x in xs if x.shape == shape and x.is_dense()), None)
        return self.new(shape, dtype or self.promote(*xs), like=like)
