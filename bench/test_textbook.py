"""netspec against the loops people write by hand, side by side in one process."""

from __future__ import annotations

import pytest

from bench.textbook_loop import compare, step_rates
from tests.conftest import SHARED_DATA, requires_mnist


@requires_mnist
def test_netspec_train_vs_textbook_dataloader_loop(benchmark):
    result = benchmark.pedantic(compare, args=(str(SHARED_DATA), 256, 1), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(f"\nnetspec train / textbook DataLoader loop: {result['ratio']:.2f}x ({result})")


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_lenet_step_vs_handwritten(benchmark, compiled: bool):
    result = benchmark.pedantic(step_rates, kwargs={"compiled": compiled}, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(f"\nnetspec / hand-written LeNet train step (batch 256): {result['ratio']:.3f}x ({result})")
