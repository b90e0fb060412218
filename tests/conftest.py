from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
ZOO = sorted(p.stem for p in SPECS.glob("*.yaml"))
# Zoo specs of torchvision models: spec name -> torchvision's weights enum (its meta holds `_ops`, in GMACs).
TORCHVISION_ZOO = {
    "vit_b_16": "ViT_B_16_Weights",
    "convnext_tiny": "ConvNeXt_Tiny_Weights",
    "swin_t": "Swin_T_Weights",
    "shufflenet_v2_x1_0": "ShuffleNet_V2_X1_0_Weights",
    "resnet50": "ResNet50_Weights",
    "maxvit_t": "MaxVit_T_Weights",
}
# Real MNIST (full train set, first 3,000 test images), read-only, beside the project.
SHARED_DATA = Path(os.environ.get("NETSPEC_SHARED_DATA", ROOT.parent / "shared" / "data"))
HAS_MNIST = (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()

requires_mnist = pytest.mark.skipif(not HAS_MNIST, reason=f"real MNIST not found under {SHARED_DATA}")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run the `netspec` CLI as a user would, in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("NETSPEC_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "netspec.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write YAML text to a spec file and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
