"""`netspec bench` and the bench/ suites, quickly (the real measurements live in bench/)."""

from __future__ import annotations

import json

import pytest

import netspec
from netspec.memory import estimate, largest_fitting
from tests.conftest import ROOT, run_cli

RESULT_KEYS = {
    "device",
    "mode",
    "batch_size",
    "compile",
    "amp",
    "channels_last",
    "examples_per_sec",
    "examples_per_sec_min",
    "examples_per_sec_max",
    "step_ms_median",
    "compile_s",
    "peak_mem_bytes",
    "predicted_peak_bytes",
    "repeats",
    "status",
    "speedup",
}


def test_bench_json_and_oom_in_a_sweep(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench",
        "specs/lenet.yaml",
        "--device",
        "cpu",
        "--batch-sizes",
        "16,100000000",
        "--amp",
        "bf16",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--repeats",
        "3",
        "--json",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert json.loads(out.read_text()) == data
    assert data["spec"] == "specs/lenet.yaml"
    assert set(data["env"]) == {"torch", "python", "cpu", "threads", "devices"}
    rows = data["results"]
    assert all(set(r) == RESULT_KEYS for r in rows)
    # 2 batch sizes × 2 modes × (eager fp32 baseline, eager bf16)
    assert len(rows) == 8
    ok = [r for r in rows if r["batch_size"] == 16]
    assert {(r["mode"], r["amp"]) for r in ok} == {
        ("train", "none"),
        ("train", "bf16"),
        ("infer", "none"),
        ("infer", "bf16"),
    }
    for r in ok:
        assert r["status"] == "ok" and r["repeats"] == 3
        assert r["examples_per_sec_min"] <= r["examples_per_sec"] <= r["examples_per_sec_max"]
        assert r["step_ms_median"] == pytest.approx(16 / r["examples_per_sec"] * 1000, rel=0.5)
        assert r["compile_s"] is None  # eager
    assert all(r["speedup"] == 1.0 for r in ok if r["amp"] == "none")
    # Beside each measured peak, the memory model's prediction (an eager step with the bench's SGD).
    net = netspec.infer_shapes(ROOT / "specs" / "lenet.yaml")
    for r in ok:
        memory = estimate(net, 16, amp=r["amp"], device="cpu")
        assert r["predicted_peak_bytes"] == (memory.peak_train if r["mode"] == "train" else memory.peak_infer)
    huge = [r for r in rows if r["batch_size"] == 100000000]
    assert huge and all(r["status"] == "oom" and r["examples_per_sec"] is None for r in huge)


def test_bench_table(tmp_path):
    result = run_cli(
        "bench",
        "specs/mlp.yaml",
        "--device",
        "cpu",
        "--batch-sizes",
        "8",
        "--modes",
        "infer",
        "--warmup",
        "0",
        "--steps",
        "1",
        "--repeats",
        "1",
        env={"COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "examples/s" in result.stdout and "eager" in result.stdout and "infer" in result.stdout
    assert "predicted" in result.stdout and "rough" in result.stdout  # CPU peaks are resident-set growth


def test_bench_auto_batch_size_fits_the_memory_budget():
    result = run_cli(
        "bench", "specs/mlp.yaml", "--device", "cpu", "--batch-sizes", "auto", "--memory-budget", "32MiB",
        "--modes", "infer", "--warmup", "0", "--steps", "1", "--repeats", "1", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    net = netspec.infer_shapes(ROOT / "specs" / "mlp.yaml")
    fit = largest_fitting(lambda b: estimate(net, b, momentum=0.9, device="cpu").peak_train, 32 * 1024**2)
    assert 0 < row["batch_size"] <= fit  # the largest predicted fit, or smaller if a real step took more
    assert f"batch size auto: {row['batch_size']}" in result.stderr
    result = run_cli("bench", "specs/mlp.yaml", "--device", "cpu", "--batch-sizes", "auto")
    assert result.returncode == 2 and "needs --memory-budget" in result.stderr


def test_bench_rejects_bad_devices():
    for device, message in (("tpu", "unknown device 'tpu'"), ("cuda:7", "device 'cuda:7'")):
        result = run_cli("bench", "specs/mlp.yaml", "--device", device)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_bench_suite_collects_and_one_tiny_benchmark_runs():
    import subprocess
    import sys

    collect = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/", "--collect-only", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert collect.returncode == 0, collect.stdout + collect.stderr
    assert "test_step_throughput[lenet-train-eager-cpu]" in collect.stdout
    assert "test_step_throughput[resnet_small-infer-compiled-cuda]" in collect.stdout
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "bench/test_throughput.py::test_step_throughput[mlp-infer-eager-cpu]",
            "--benchmark-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-json",
            "/dev/stdout",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert '"examples_per_sec"' in one.stdout and "1 passed" in one.stdout


@pytest.mark.slow
def test_compiled_variant_reports_compile_time_separately():
    result = run_cli(
        "bench",
        "specs/mlp.yaml",
        "--device",
        "cpu",
        "--compile",
        "both",
        "--batch-sizes",
        "64",
        "--warmup",
        "2",
        "--steps",
        "5",
        "--repeats",
        "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    compiled = [r for r in rows if r["compile"]]
    assert len(compiled) == 2 and all(r["status"] == "ok" and r["compile_s"] > 0 for r in compiled)
    assert all(r["speedup"] is not None for r in compiled)


def test_end_to_end_mode_times_a_real_training_epoch(write_spec):
    from netspec.bench import bench

    spec = write_spec(
        "name: e2e\ninput: [1, 8, 8]\nlayers: [flatten, {linear: {out_features: 10}}]\n"
        "train: {dataset: synthetic, synthetic_size: 512}\n"
    )
    report = bench(spec, devices=["cpu"], batch_sizes=[32, 64], end_to_end=True)
    assert [(r.mode, r.batch_size, r.status) for r in report.results] == [
        ("train-end-to-end", 32, "ok"),
        ("train-end-to-end", 64, "ok"),
    ]
    assert all(r.examples_per_sec and r.examples_per_sec > 0 for r in report.results)
