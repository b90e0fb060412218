"""netspec: declarative model specs -> validated, shape-inferred PyTorch modules.

The pipeline, one module per stage, each using only the ones before it:

    source (YAML text) -> spec (pydantic) -> graph (blocks, repeats, taps expanded) -> shapes
        -> compiler (nn.Module) -> data / train, bench, exporter (ONNX, pt2, Python), diagram

The CLI (`netspec.cli`) is a thin layer over these functions.
"""

from netspec.compiler import SpecNet, build, transfer_state_dict
from netspec.config import BenchConfig, TrainConfig
from netspec.diagram import draw
from netspec.errors import NetspecError, SpecError
from netspec.exporter import export
from netspec.layers import LAYER_KINDS, LayerSpec
from netspec.shapes import LayerInfo, NetShape, infer_shapes
from netspec.spec import Spec, as_spec, load_spec, parse_spec

__all__ = [
    "LAYER_KINDS",
    "BenchConfig",
    "LayerInfo",
    "LayerSpec",
    "NetShape",
    "NetspecError",
    "Spec",
    "SpecError",
    "SpecNet",
    "TrainConfig",
    "as_spec",
    "build",
    "draw",
    "export",
    "infer_shapes",
    "load_spec",
    "parse_spec",
    "transfer_state_dict",
]
__version__ = "0.1.0"
