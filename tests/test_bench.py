"""`netspec bench` and the bench/ suites, quickly (the real measurements live in bench/)."""

from __future__ import annotations

import json

import pytest
import torch

import netspec
from netspec.memory import estimate, format_bytes, largest_fitting
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
    "stable",
    "note",
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
    assert data["stable"] == all(r["stable"] is not False for r in data["results"])
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
        assert r["stable"] in (True, False) and (r["note"] is None) == r["stable"]
    assert all(r["speedup"] == 1.0 for r in ok if r["amp"] == "none")
    # Beside each measured peak, the memory model's prediction (an eager step with the bench's SGD).
    net = netspec.infer_shapes(ROOT / "specs" / "lenet.yaml")
    for r in ok:
        memory = estimate(net, 16, amp=r["amp"], device="cpu")
        assert r["predicted_peak_bytes"] == (memory.peak_train if r["mode"] == "train" else memory.peak_infer)
    huge = [r for r in rows if r["batch_size"] == 100000000]
    assert huge and all(r["status"] == "oom" and r["examples_per_sec"] is None for r in huge)


@pytest.mark.parametrize("columns", [80, 200])
def test_bench_table_keeps_every_number_at_any_width(tmp_path, columns: int):
    # An 80-column terminal (or a notebook cell) used to get `│ cpu │ train │ 32 │ eager │ 68 │ 472.… │`.
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench", "specs/mlp.yaml", "--device", "cpu", "--batch-sizes", "8,16", "--amp", "bf16",
        "--warmup", "0", "--steps", "1", "--repeats", "2", "--out", str(out),
        env={"COLUMNS": str(columns)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns, result.stdout
    assert "…" not in result.stdout and "examples/s" in result.stdout and "speedup" in result.stdout
    for r in json.loads(out.read_text())["results"]:
        _assert_row_readable(result.stdout, r)
    assert "predicted" in result.stdout and "rough" in result.stdout  # CPU peaks are resident-set growth


def _assert_row_readable(text: str, r: dict) -> None:
    """Every figure of a result appears whole in the table."""
    figures = [f"{r['examples_per_sec']:,.0f}", f"{r['examples_per_sec_min']:,.0f}–{r['examples_per_sec_max']:,.0f}"]
    figures += [f"{r['step_ms_median']:.2f}", format_bytes(r["peak_mem_bytes"]), f"{r['speedup']:.2f}×"]
    if r["predicted_peak_bytes"] is not None:
        figures.append(format_bytes(r["predicted_peak_bytes"]))
    if r["compile_s"]:
        figures.append(f"{r['compile_s']:.1f}")
    for figure in figures:
        assert figure in text, f"{figure} of {r['mode']} {r['batch_size']} missing from\n{text}"


def _report(unstable: bool = False):
    """Two devices, compiled and bf16+channels_last variants, an oom and an error: the widest table there is."""
    from netspec.bench import BenchReport, BenchResult

    env = {"torch": "2.15.0+cu132", "python": "3.12", "cpu": "AMD EPYC 7B13 (2 cores)", "threads": 2, "devices": []}
    report = BenchReport("specs/resnet_small.yaml", env)
    figures = 13342.0
    for device in ("cpu", "cuda:0"):
        for mode in ("train", "infer"):
            for compile_, amp, cl in ((False, "none", False), (True, "none", False), (False, "bf16", True)):
                r = BenchResult(device, mode, 1024, compile_, amp, cl, figures, figures * 0.93, figures * 1.04)
                r.step_ms_median, r.peak_mem_bytes, r.repeats = 1024 / figures * 1000, 187_170_816, 5
                r.predicted_peak_bytes = 1_000_000_000  # "953.7 MiB", as wide as a figure of bytes gets
                r.compile_s, r.speedup, r.stable = (12.3 if compile_ else None), figures / 13342.0, True
                report.results.append(r)
                figures *= 1.37
    error = "error: RuntimeError: CUDA error: an illegal memory access was encountered"
    for failed, status in zip(report.results[-2:], (error, "oom"), strict=True):  # as measure() leaves a failure
        failed.status, failed.stable = status, None
        failed.examples_per_sec = failed.examples_per_sec_min = failed.examples_per_sec_max = None
        failed.step_ms_median = failed.compile_s = failed.peak_mem_bytes = failed.speedup = None
    if unstable:
        shaky = report.results[1]
        shaky.examples_per_sec_min, shaky.examples_per_sec_max, shaky.stable = 506.0, 6333.0, False
        shaky.note = "unstable: the 5 repeats ranged 506–6,333 examples/s (12.5× apart): ..."
    return report


@pytest.mark.parametrize("width", [80, 100, 160])
def test_bench_table_layouts_fold_before_they_drop(width: int):
    import io

    from rich.console import Console

    from netspec.bench import bench_table

    report = _report(unstable=True)
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(bench_table(report, width))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width, text
    assert "…" not in text
    for r in report.results:
        if r.status == "ok":
            _assert_row_readable(text, {**r.__dict__})
    assert "oom" in text and "error" in text
    flowing = " ".join(text.split())  # the footnotes, as wrapped to the width
    assert "CUDA error: an illegal memory access was encountered" in flowing
    # The unstable cell and the speedups that rest on it carry the mark, explained under the table.
    assert f"{report.results[1].examples_per_sec:,.0f}*" in text and "1.37×*" in text
    assert "13,342" in text and "13,342*" not in text and "1.00×*" not in text
    assert "* unstable: the repeats of 1 cell were more than 1.5× apart" in flowing


def test_unstable_repeats_are_flagged_with_the_reason(monkeypatch):
    from types import SimpleNamespace

    import netspec.bench as bench_module

    clock = SimpleNamespace(now=0.0, durations=[])

    def step() -> None:
        clock.now += clock.durations.pop(0)

    prepared = bench_module.PreparedStep(step, torch.nn.Identity(), ())
    monkeypatch.setattr(bench_module, "prepare_step", lambda *args, **kwargs: (prepared, None))
    monkeypatch.setattr(bench_module, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    spec = bench_module.load_spec("specs/mlp.yaml")
    cpu = bench_module.resolve_device("cpu")
    # Two warm-up steps (at least two, so that the peak has the optimizer state), then three repeats of two
    # steps; the third repeat runs 3× slower (other load).
    clock.durations = [0.001] * 2 + [0.001] * 4 + [0.003] * 2
    shaky = bench_module.measure(spec, cpu, "infer", 8, bench_module.Variant(), warmup=1, steps=2, repeats=3)
    assert shaky.status == "ok" and shaky.stable is False
    assert shaky.examples_per_sec_max / shaky.examples_per_sec_min == pytest.approx(3.0)
    assert shaky.note.startswith("unstable: the 3 repeats ranged 2,667–8,000 examples/s (3.0× apart): ")
    assert "load average" in shaky.note and "compare only figures measured side by side" in shaky.note
    clock.durations = [0.001] * 2 + [0.001] * 4 + [0.0014] * 2  # 1.4× apart: ordinary noise
    steady = bench_module.measure(spec, cpu, "infer", 8, bench_module.Variant(), warmup=1, steps=2, repeats=3)
    assert steady.stable is True and steady.note is None
    report = bench_module.BenchReport("specs/mlp.yaml", {}, [steady, shaky])
    assert report.to_dict()["stable"] is False


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
