"""The memory model (netspec/memory.py): predicted saved activations against what autograd really saves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import netspec
from netspec.errors import SpecError, UsageError
from netspec.layers import LAYER_KINDS, MERGE_KINDS
from netspec.memory import (
    BatchChoice,
    auto_batch_size,
    estimate,
    format_bytes,
    largest_fitting,
    measure_saved,
    parse_bytes,
    training_step_peak,
)
from netspec.spec import load_spec, validate_spec
from tests.conftest import SPECS, ZOO, requires_cuda, run_cli
from tests.test_properties import spec_data

FIXTURES = Path(__file__).parent / "fixtures" / "memory"
# Specs for the kinds the zoo does not use yet: ViT-, ConvNeXt- and Swin-style networks in miniature, and one
# spec with every other kind.
KIND_SPECS = sorted(FIXTURES.glob("*.yaml"))


def _prediction_and_measurement(path: Path, batch: int, amp: str = "none") -> tuple[int, int]:
    torch.manual_seed(0)
    model = netspec.build(path)
    net = model.net_shape
    measured = measure_saved(model, torch.randn(batch, *net.input_shape), amp)
    return estimate(net, batch, amp=amp, device="cpu").activations, measured


@pytest.mark.parametrize("batch", [2, 3])
@pytest.mark.parametrize("name", ZOO)
def test_predicted_saved_activations_match_autograd_for_every_zoo_spec(name: str, batch: int):
    # Measured with torch.autograd.graph.saved_tensors_hooks in train mode: each distinct storage once.
    predicted, measured = _prediction_and_measurement(SPECS / f"{name}.yaml", batch)
    assert abs(predicted - measured) <= 0.05 * measured, (name, batch, predicted, measured)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("path", KIND_SPECS, ids=lambda p: p.stem)
def test_every_kind_saves_exactly_what_autograd_saves(path: Path, batch: int):
    # Batch 1 and 3: torch's contiguity rules ignore dimensions of size 1, which decides views against copies.
    predicted, measured = _prediction_and_measurement(path, batch)
    assert predicted == measured


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("path", [SPECS / "d2l_resnet18.yaml", SPECS / "d2l_googlenet.yaml", *KIND_SPECS], ids=lambda p: p.stem)
def test_autocast_copies_are_predicted_on_cpu(path: Path, amp: str):
    # Under autocast a convolution or matmul saves half-precision copies of its input and weight.
    predicted, measured = _prediction_and_measurement(path, 2, amp)
    assert predicted == measured


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec_data())
def test_generated_specs_save_exactly_what_is_predicted(data: dict[str, Any]):
    # The property tests' random specs (every kind with random arguments, blocks, repeats, residuals, merges, taps).
    try:
        net = netspec.infer_shapes(validate_spec(data))
    except SpecError:
        return
    torch.manual_seed(0)
    model = netspec.build(net)
    try:
        measured = measure_saved(model, torch.randn(2, *net.input_shape))
    except ValueError as exc:  # torch's own refusal: batch norm over a single value per channel
        assert "Expected more than 1 value per channel" in str(exc)
        return
    assert estimate(net, 2, device="cpu").activations == measured


def test_every_layer_and_merge_kind_is_covered_by_the_memory_tests():
    # A kind added later needs its saved_for_backward rule checked: put it in a zoo spec or in tests/fixtures/memory.
    used: set[str] = set()
    for path in [*(SPECS / f"{name}.yaml" for name in ZOO), *KIND_SPECS]:
        used |= {info.kind for info in netspec.infer_shapes(path).layers}
    assert (set(LAYER_KINDS) | set(MERGE_KINDS)) - used == set()


def test_a_storage_saved_by_several_layers_counts_once(write_spec):
    path = write_spec(
        "name: t\ninput: [1, 8, 8]\nlayers:\n  - conv2d: {out_channels: 4, kernel_size: 3, padding: 1}\n"
        "  - batchnorm\n  - relu\n  - flatten\n  - linear: {out_features: 10}\n"
    )
    memory = estimate(netspec.infer_shapes(path), 2, device="cpu")
    # conv2d saves its input (2·1·64 floats); batchnorm the conv's output (2·4·64) and 2×4 statistics; relu its
    # output (2·4·64); flatten is a view and linear saves that view of relu's output: nothing new.
    assert [row.saved for row in memory.rows] == [512, 2048 + 32, 2048, 0, 0]
    assert memory.activations == 4640
    model = netspec.build(path)
    assert measure_saved(model, torch.randn(2, 1, 8, 8)) == 4640


def test_dropout_masks_differ_by_device():
    net = netspec.infer_shapes(SPECS / "cifar_net_dropout.yaml")
    dropouts = [i for i, info in enumerate(net.layers) if info.kind == "dropout"]
    cpu, cuda = estimate(net, 4, device="cpu"), estimate(net, 4, device="cuda")
    # CPU keeps a float32 noise tensor per element; CUDA's fused kernel a one-byte mask.
    for i in dropouts:
        assert cpu.rows[i].saved == 4 * cuda.rows[i].saved > 0


def test_peak_is_the_sum_of_its_parts_and_the_optimizer_state_follows_the_optimizer():
    net = netspec.infer_shapes(SPECS / "resnet_small.yaml")
    params = 4 * net.total_params
    sgd = estimate(net, 32, optimizer="sgd")
    momentum = estimate(net, 32, optimizer="sgd", momentum=0.9)
    adam = estimate(net, 32, optimizer="adam")
    assert (sgd.optimizer_state, momentum.optimizer_state, adam.optimizer_state) == (0, params, 2 * params)
    assert sgd.params == sgd.grads == params
    assert sgd.buffers == sum(8 * info.output_shape[0] + 8 for info in net.layers if info.kind == "batchnorm")
    parts = sgd.params + sgd.buffers + sgd.grads + sgd.optimizer_state + sgd.activations + sgd.output + sgd.transient
    assert sgd.peak_train == parts
    assert adam.peak_train - sgd.peak_train == 2 * params
    assert sgd.peak_infer < sgd.peak_train
    # Activations grow linearly with the batch, but for batch norm's per-channel statistics.
    statistics = sum(8 * info.output_shape[0] for info in net.layers if info.kind == "batchnorm")
    assert 2 * sgd.activations - estimate(net, 64).activations == statistics


def test_amp_halves_activations_of_a_convolutional_network():
    net = netspec.infer_shapes(SPECS / "d2l_resnet18.yaml")
    full, half = estimate(net, 64), estimate(net, 64, amp="bf16")
    weights_cast = 2 * net.total_params  # the half-precision weight copies autocast keeps (biases left out)
    assert 0.45 < (half.activations - weights_cast) / full.activations < 0.6


def test_inference_peak_holds_a_skip_connection_until_it_is_read():
    net = netspec.infer_shapes(SPECS / "unet_small.yaml")
    memory = estimate(net, 8)
    # The first encoder's 16×64×64 output (tap enc1) is held through the whole network until the last concat
    # reads it: then it, the 16×64×64 up-sampling and their 32×64×64 concatenation are alive together.
    assert memory.peak_infer - memory.params - memory.buffers >= 4 * 8 * (16 + 16 + 32) * 64 * 64


def test_parse_and_format_bytes():
    assert parse_bytes("8GiB") == 8 * 1024**3
    assert parse_bytes("512 MiB") == 512 * 1024**2
    assert parse_bytes("2GB") == 2 * 1000**3
    assert parse_bytes("8g") == parse_bytes("8 GiB")
    assert parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="expected a size such as 8GiB"):
        parse_bytes("8 gigs")
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"


def test_largest_fitting_batch_is_the_largest_under_the_budget():
    assert largest_fitting(lambda b: 1000 + 10 * b, 1000 + 10 * 77) == 77
    assert largest_fitting(lambda b: 1000 + 10 * b, 1000 + 10 * 77 - 1) == 76
    assert largest_fitting(lambda b: 1000 + 10 * b, 500) == 0


def test_auto_batch_size_on_cpu_fits_the_budget_and_backs_off_when_a_real_step_does_not_fit():
    net = netspec.infer_shapes(SPECS / "lenet.yaml")
    budget = 64 * 1024**2
    predicted_fit = largest_fitting(lambda b: estimate(net, b, device="cpu").peak_train, budget)
    assert estimate(net, predicted_fit, device="cpu").peak_train <= budget
    assert estimate(net, predicted_fit + 1, device="cpu").peak_train > budget
    tried: list[int] = []

    def step(batch: int) -> int:  # a device on which more than 500 examples take more than predicted
        tried.append(batch)
        return 2 * budget if batch > 500 else budget // 2

    choice = auto_batch_size(net, torch.device("cpu"), budget=budget, step=step)
    assert tried[0] == predicted_fit > 500
    assert choice.batch_size <= 500 and choice.tried == tried[:-1] and len(tried) > 1
    assert choice.measured_peak == budget // 2
    assert "batch size auto: " in choice.describe() and "budget 64.0 MiB (--memory-budget 64.0 MiB)" in (
        choice.describe()
    )


def test_auto_batch_size_confirms_with_a_real_step_on_cpu():
    net = netspec.infer_shapes(SPECS / "mlp.yaml")
    budget = 48 * 1024**2
    choice = auto_batch_size(net, torch.device("cpu"), budget=budget, optimizer="adam")
    predicted_fit = largest_fitting(lambda b: estimate(net, b, device="cpu", optimizer="adam").peak_train, budget)
    # The first real step is the largest predicted fit; a smaller batch only if its resident-set growth (rough on
    # CPU) went over the budget.
    assert [*choice.tried, choice.batch_size][0] == predicted_fit > 1000
    assert all(batch > choice.batch_size for batch in choice.tried)
    assert choice.predicted_peak <= budget
    assert choice.measured_peak is not None and 0 < choice.measured_peak <= budget


def test_auto_batch_size_without_cuda_needs_a_budget():
    net = netspec.infer_shapes(SPECS / "lenet.yaml")
    with pytest.raises(UsageError, match="needs --memory-budget"):
        auto_batch_size(net, torch.device("cpu"))
    with pytest.raises(UsageError, match="even a batch of 1 is predicted to need"):
        auto_batch_size(net, torch.device("cpu"), budget=1024)


@requires_cuda
@pytest.mark.parametrize("name", ZOO)
def test_predicted_peak_matches_cuda_max_memory_allocated(name: str):
    # The CUDA allocator's own count of a training step (the second: with optimizer state), within 10%.
    spec = load_spec(SPECS / f"{name}.yaml")
    net = netspec.infer_shapes(spec)
    device = torch.device("cuda")
    batch = spec.train.batch_size
    measured = training_step_peak(net, batch, device, optimizer="sgd", momentum=spec.train.momentum)
    predicted = estimate(net, batch, optimizer="sgd", momentum=spec.train.momentum, device="cuda").peak_train
    assert measured is not None and abs(predicted - measured) <= 0.10 * measured, (name, predicted, measured)


def test_train_batch_size_auto_on_cpu_trains_with_the_chosen_batch(tmp_path):
    result = run_cli(
        "train", "specs/mlp.yaml", "--dataset", "synthetic", "--epochs", "1", "--device", "cpu",
        "--batch-size", "auto", "--memory-budget", "64MiB", "--out", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("batch size auto: "))
    chosen = int(line.split(":")[1].split()[0])
    assert "predicted peak" in line and "budget 64.0 MiB (--memory-budget 64.0 MiB)" in line
    run = Path(json.loads(result.stdout)["run_dir"])
    assert load_spec(run / "spec.yaml").train.batch_size == chosen  # the run's own record of its recipe
    assert (
        estimate(netspec.infer_shapes(SPECS / "mlp.yaml"), chosen, momentum=0.9, device="cpu").peak_train <= 64 * 2**20
    )


def test_the_auto_choice_says_its_figure_is_per_process():
    choice = BatchChoice(48, 900 * 2**20, 1024**3, "90% of 1.1 GiB free on cuda:0", None, [64], processes=4)
    assert choice.describe() == (
        "batch size auto: 48 per process, on each of 4 processes (did not fit: 64): predicted peak 900.0 MiB; "
        "budget 1.0 GiB (90% of 1.1 GiB free on cuda:0)"
    )


@pytest.mark.parametrize("name", ["lenet", "mlp", "cifar_net_batchnorm", "resnet_small", "vit_mnist"])
def test_cpu_peak_is_the_allocators_count_and_the_prediction_bounds_it(name: str):
    # On CPU the measured peak is the CPU allocator's own count (torch.profiler's memory events), not the resident
    # set: the prediction is an upper bound of it and close to it, so it is the figure to plan with.
    spec = load_spec(SPECS / f"{name}.yaml")
    net = netspec.infer_shapes(spec)
    measured = training_step_peak(net, 32, torch.device("cpu"), optimizer="sgd", momentum=spec.train.momentum)
    predicted = estimate(net, 32, optimizer="sgd", momentum=spec.train.momentum, device="cpu").peak_train
    assert measured is not None and measured <= predicted * 1.02 and predicted <= 1.3 * measured, (measured, predicted)


def test_bench_cpu_peak_is_close_to_the_prediction():
    result = run_cli("bench", "specs/lenet.yaml", "--device", "cpu", "--mode", "train", "--batch-size", "256",
                     "--steps", "2", "--repeats", "1", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (cell,) = json.loads(result.stdout)["results"]
    assert abs(cell["peak_mem_bytes"] - cell["predicted_peak_bytes"]) <= 0.05 * cell["predicted_peak_bytes"], cell
    assert "USDT" not in result.stderr and "profiler_start" not in result.stderr
