"""Activations: element-wise, the output shape is the input shape."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Gt
from torch import nn

from netspec.layers.base import Dim, LayerSpec, ModuleCall, Shape, ShapeError, Size, axis, call, register


class _Activation(LayerSpec):
    """An element-wise torch.nn module: named (and spelled in PyTorch) after it unless said otherwise."""

    module: ClassVar[type[nn.Module]]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if not cls.torch_name and "module" in cls.__dict__:  # (an abstract base such as _SoftmaxLike has none)
            cls.torch_name = cls.module.__name__

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(self.module, **self.args())


def _activation(kind: str, module: type[nn.Module]) -> type[_Activation]:
    """An argument-free activation kind, named after the kind and mapped to a torch.nn module."""
    cls = type(
        module.__name__,
        (_Activation,),
        {
            "__annotations__": {"kind": Literal[kind]},  # type: ignore[valid-type]
            "kind": kind,
            "module": module,
            "__module__": __name__,
        },
    )
    return register(cls)  # type: ignore[return-value]


for _kind, _module in (
    ("relu", nn.ReLU),
    ("relu6", nn.ReLU6),
    ("hardswish", nn.Hardswish),
    ("hardsigmoid", nn.Hardsigmoid),
    ("sigmoid", nn.Sigmoid),
    ("tanh", nn.Tanh),
    ("silu", nn.SiLU),
    ("mish", nn.Mish),
    ("selu", nn.SELU),
    ("identity", nn.Identity),
):
    _activation(_kind, _module)


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

    def module_call(self, shape: Shape) -> ModuleCall:
        return call(nn.PReLU, self.num_parameters, self.init)


class _SoftmaxLike(_Activation):
    # Like torch, `dim` counts the batch dimension: the default 1 is the class/channel axis.
    dim: Dim = 1

    def output_shape(self, shape: Shape) -> Shape:
        axis(self.dim, len(shape))
        return shape


@register
class Softmax(_SoftmaxLike):
    kind: Literal["softmax"] = "softmax"
    module: ClassVar[type[nn.Module]] = nn.Softmax


@register
class LogSoftmax(_SoftmaxLike):
    kind: Literal["log_softmax"] = "log_softmax"
    module: ClassVar[type[nn.Module]] = nn.LogSoftmax
