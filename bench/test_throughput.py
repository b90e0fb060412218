"""Throughput of every zoo spec: train and infer, eager and compiled, CPU and CUDA.

Each benchmark times one step (inputs already on the device, see netspec.bench) and
records examples/sec in its extra_info. Save a baseline and compare against it:

    pytest bench/ --benchmark-only --benchmark-autosave
    pytest bench/ --benchmark-only --benchmark-compare --benchmark-compare-fail=mean:10%
"""

from __future__ import annotations

import pytest
import torch

from netspec.bench import Variant, _sync, environment, prepare_step
from netspec.spec import load_spec
from tests.conftest import SPECS, ZOO

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("mode", ["train", "infer"])
@pytest.mark.parametrize("name", ZOO)
def test_step_throughput(benchmark, name: str, mode: str, compiled: bool, device: str):
    spec = load_spec(SPECS / f"{name}.yaml")
    batch_size = spec.train.batch_size
    dev = torch.device(device)
    step, compile_s = prepare_step(spec, dev, mode, batch_size, Variant(compile=compiled))

    def timed_step() -> None:
        step()
        _sync(dev)

    benchmark.group = f"{device}-{mode}-{name}"
    benchmark.pedantic(timed_step, warmup_rounds=3, rounds=10, iterations=3)
    benchmark.extra_info.update(
        {
            "examples_per_sec": batch_size / benchmark.stats.stats.median,
            "batch_size": batch_size,
            "compile_s": compile_s,
            "env": environment(),
        }
    )
