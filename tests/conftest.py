from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Image-folder caches of the tests go to a folder of their own, not the user's ~/.cache/netspec.
os.environ.setdefault("NETSPEC_CACHE", __import__("tempfile").mkdtemp(prefix="netspec-test-cache-"))
SPECS = ROOT / "specs"
ZOO = sorted(p.stem for p in SPECS.glob("*.yaml"))
# Zoo specs of torchvision models: spec name -> torchvision's weights enum (its meta holds `_ops`, in GMACs).
TORCHVISION_ZOO = {
    "vit_b_16": "ViT_B_16_Weights",
    "convnext_tiny": "ConvNeXt_Tiny_Weights",
    "swin_t": "Swin_T_Weights",
    "shufflenet_v2_x1_0": "ShuffleNet_V2_X1_0_Weights",
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "maxvit_t": "MaxVit_T_Weights",
}
# Zoo specs of timm models (tests/test_timm_zoo.py): spec name -> timm's model name.
TIMM_ZOO = {
    "mobilevit_xxs": "mobilevit_xxs",
    "cait_xxs24_224": "cait_xxs24_224",
    "levit_128s": "levit_128s",
    "efficientformer_l1": "efficientformer_l1",
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


def free_port() -> int:
    """A local port nothing listens on now (picked by the kernel from its ephemeral range)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


_DATABASES = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A throwaway PostgreSQL server for the session (skipped only where PostgreSQL is not installed)."""
    from tests import pgserver

    reason = pgserver.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = pgserver.PostgresServer.create()
    try:
        server.start()
        server.admin(f"CREATE ROLE {pgserver.USER} LOGIN PASSWORD '{pgserver.PASSWORD}'")
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: Any, request: pytest.FixtureRequest) -> str:
    """A new, empty database of the session's server, owned by a password-authenticated role."""
    from tests import pgserver

    if not postgres_server.running():  # a test that restarts the server may have failed half-way
        postgres_server.start()
    name = f"t{next(_DATABASES)}_" + re.sub(r"[^a-z0-9]", "_", request.node.name.lower())[:40]
    postgres_server.admin(f"CREATE DATABASE {name} OWNER {pgserver.USER}")
    return postgres_server.url(name)
