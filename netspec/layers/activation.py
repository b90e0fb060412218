"""Activations: element-wise, the output shape is the input shape."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Gt
from torch import nn

from netspec.layers.base import Dim, LayerSpec, ModuleCall, Shape, ShapeError, Size, axis, call, register
from netspec.layers.saved import Run, Tensor

# What an activation's backward needs (torch's derivatives.yaml): its input, or its output.
INPUT, OUTPUT, NOTHING = "input", "output", "nothing"


class _Activation(LayerSpec):
    """An element-wise torch.nn module: named (and spelled in PyTorch) after it unless said otherwise."""

    module: ClassVar[type[nn.Module]]
    saves: ClassVar[str] = INPUT

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if not cls.torch_name and "module" in cls.__dict__:  # (an abstract base such as _SoftmaxLike has none)
            cls.torch_name = cls.module.__name__

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(self.module, **self.args())

    def saved_for_backward(self, run: Run) -> Tensor:
        if self.saves == NOTHING:
            return run.input  # nn.Identity returns the tensor it is given
        out = run.pointwise(run.input)
        run.save(out if self.saves == OUTPUT else run.input)
        return out


def _activation(kind: str, module: type[nn.Module], saves: str = INPUT) -> type[_Activation]:
    """An argument-free activation kind, named after the kind and mapped to a torch.nn module."""
    cls = type(
        module.__name__,
        (_Activation,),
        {
            "__annotations__": {"kind": Literal[kind]},  # type: ignore[valid-type]
            "kind": kind,
            "module": module,
            "saves": saves,
            "__module__": __name__,
        },
    )
    return register(cls)  # type: ignore[return-value]


for _kind, _module, _saves in (
    ("relu", nn.ReLU, OUTPUT),
    ("relu6", nn.ReLU6, INPUT),
    ("hardswish", nn.Hardswish, INPUT),
    ("hardsigmoid", nn.Hardsigmoid, INPUT),
    ("sigmoid", nn.Sigmoid, OUTPUT),
    ("tanh", nn.Tanh, OUTPUT),
    ("silu", nn.SiLU, INPUT),
    ("mish", nn.Mish, INPUT),
    ("selu", nn.SELU, INPUT),
    ("identity", nn.Identity, NOTHING),
):
    _activation(_kind, _module, saves=_saves)


@register
class LeakyReLU(_Activation):
    kind: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: float = 0.01
    module: ClassVar[type[nn.Module]] = nn.LeakyReLU


@register
class GELU(_Activation):
    kind: Literal["gelu"] = "gelu"
    approximate: Literal["none", "tanh"] = "none"
    module: ClassVar[type[nn.Module]] = nn.GELU


@register
class ELU(_Activation):
    kind: Literal["elu"] = "elu"
    alpha: float = 1.0
    module: ClassVar[type[nn.Module]] = nn.ELU


@register
class Softplus(_Activation):
    kind: Literal["softplus"] = "softplus"
    beta: float = 1.0
    threshold: float = 20.0
    module: ClassVar[type[nn.Module]] = nn.Softplus

    def saved_for_backward(self, run: Run) -> Tensor:
        x = run.upcast(run.input)  # float32 under CUDA autocast
        run.save(x)
        return run.pointwise(x)


@register
class PReLU(LayerSpec):
    """Leaky ReLU with a learned slope: one for all channels, or one per channel (num_parameters = channels)."""

    kind: Literal["prelu"] = "prelu"
    num_parameters: Size = 1
    init: Annotated[float, Gt(-1e9)] = 0.25
    torch_name: ClassVar[str] = "PReLU"

    def output_shape(self, shape: Shape) -> Shape:
        channels = shape[0] if len(shape) > 1 else shape[-1]
        if self.num_parameters not in (1, channels):
            raise ShapeError(f"num_parameters must be 1 or the {channels} channels, got {self.num_parameters}")
        return shape

    def num_params(self, shape: Shape) -> int:
        return self.num_parameters

    def saved_for_backward(self, run: Run) -> Tensor:
        x = run.lower(run.input)  # autocast runs prelu in half precision
        run.save(x, run.weight((self.num_parameters,)))
        return run.pointwise(x)

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.PReLU, self.num_parameters, self.init)


class _SoftmaxLike(_Activation):
    # Like torch, `dim` counts the batch dimension: the default 1 is the class/channel axis.
    dim: Dim = 1

    def output_shape(self, shape: Shape) -> Shape:
        axis(self.dim, len(shape))
        return shape

    def saved_for_backward(self, run: Run) -> Tensor:
        return softmax(run, run.input)


def softmax(run: Run, x: Tensor) -> Tensor:
    """softmax and log_softmax save their output (float32 under CUDA autocast), always contiguous: ATen's kernels
    run on input.contiguous(), so a permuted input gives an output that a permute back cannot view as it was."""
    x = run.upcast(x)
    out = run.new(x.shape, x.dtype)
    run.save(out)
    return out


@register
class Softmax(_SoftmaxLike):
    kind: Literal["softmax"] = "softmax"
    module: ClassVar[type[nn.Module]] = nn.Softmax


@register
class LogSoftmax(_SoftmaxLike):
    kind: Literal["log_softmax"] = "log_softmax"
    module: ClassVar[type[nn.Module]] = nn.LogSoftmax
