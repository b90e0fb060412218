"""`netspec sweep` and spec variables: as a user runs them, in subprocesses, on real or synthetic data."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import netspec
from netspec.cli import main
from tests.conftest import ROOT, SHARED_DATA, requires_mnist, run_cli

# Small and quick: a wide-ish MLP on the synthetic dataset (random images labelled by a random teacher).
# The docs' multi-machine sweep spec (examples/varnet.yaml): a small MLP with two variables (width, p_drop) on synthetic images.
VAR_SPEC = (ROOT / "examples" / "varnet.yaml").read_text()


def _line_of(text: str) -> int:
    """The line number of VAR_SPEC's line holding `text`."""
    return next(number for number, line in enumerate(VAR_SPEC.splitlines(), 1) if text in line)


def _sweep(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("sweep", *args, cwd=cwd)


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


# --- spec variables ------------------------------------------------------------------------------


def test_variables_and_arithmetic_and_set(write_spec):
    path = write_spec(VAR_SPEC)
    net = netspec.infer_shapes(netspec.load_spec(path))
    assert [i.output_shape for i in net.layers if i.kind == "linear"] == [(32,), (16,), (10,)]
    wide = netspec.load_spec(path, variables={"width": 64})
    assert wide.vars["width"] == 64
    assert [i.output_shape for i in netspec.infer_shapes(wide).layers if i.kind == "linear"][:2] == [(64,), (32,)]
    result = run_cli("build", str(path), "--set", "width=48", "--json")
    assert result.returncode == 0, result.stderr
    assert [layer["output_shape"] for layer in json.loads(result.stdout)["layers"]][1] == [48]


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        (VAR_SPEC, ["--set", "widht=3"], "--set widht: the spec has no variable 'widht' (did you mean 'width'?)"),
        (
            VAR_SPEC.replace('"$width // 2"', "$widht"),
            [],
            f":{_line_of('$width // 2')}:28: layers[4] linear: unknown variable $widht (did you mean 'width'?)",
        ),
        (VAR_SPEC.replace('"$width // 2"', '"$width // "'), [], "cannot read '$width // ' as arithmetic"),
        (VAR_SPEC.replace('"$width // 2"', '"$width + __import__(1)"'), [], "only numbers, $variables"),
        (VAR_SPEC, ["--set", "width=0"], "layers[1] linear: out_features: input should be greater than 0, got 0"),
    ],
    ids=["unknown-set", "unknown-variable", "bad-arithmetic", "no-calls", "bad-value"],
)
def test_variable_errors_are_located(write_spec, capsys, text: str, args: list[str], message: str):
    path = write_spec(text)
    assert main(["build", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_run_folder_keeps_the_resolved_variables(write_spec, tmp_path: Path):
    path = write_spec(VAR_SPEC)
    out = tmp_path / "run"
    result = run_cli("train", str(path), "--set", "width=24", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((out / "spec.yaml").read_text())
    assert saved["vars"]["width"] == 24
    assert saved["layers"][1] == {"linear": {"out_features": 24}}


# --- validation before any trial -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "lrr=0.1,0.01"], "--grid lrr: not a train setting nor a spec variable (did you mean 'lr'?)"),
        (["--grid", "lr=0.1,-1"], "--grid lr=-1: input should be greater than 0"),
        (["--grid", "optimizer=sgd,rmsprop"], "--grid optimizer='rmsprop': input should be 'sgd', 'adam' or 'adamw'"),
        (["--grid", "width=16,0"], "out_features: input should be greater than 0, got 0 (with width=0)"),
        (["--grid", "lr=1e-4..1e-1:log"], "ranges need --sampler tpe or random with --trials N"),
        (["--grid", "lr=0.1", "--sampler", "tpe"], "--sampler tpe needs --trials N"),
        ([], "nothing to sweep"),
        (["--grid", "lr=0.1", "--storage", "study.db"], "--storage study.db: not a database URL (e.g. sqlite:///"),
        (["--grid", "lr=0.1", "--storage", "sqlite:////no/such/dir/s.db"], "cannot use this database (unable to open"),
    ],
    ids=[
        "unknown-key",
        "bad-value",
        "bad-choice",
        "spec-does-not-build",
        "range-on-grid",
        "no-trials",
        "empty",
        "storage-not-a-url",
        "storage-cannot-open",
    ],
)
def test_bad_sweeps_are_refused_before_any_trial(write_spec, capsys, tmp_path: Path, args: list[str], message: str):
    path = write_spec(VAR_SPEC)
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # nothing ran, nothing was written


def test_a_located_error_in_the_sweep_section(write_spec):
    path = write_spec(VAR_SPEC + "sweep: {grid: {lr: [0.1]}, samplr: tpe}\n")
    result = _sweep(str(path))
    assert result.returncode == 2
    line = len(VAR_SPEC.splitlines()) + 1
    assert result.stderr == f"error: {path}:{line}:28: unknown key 'sweep.samplr' (did you mean 'sampler'?)\n"


# --- running -----------------------------------------------------------------------------------


@requires_mnist
@pytest.mark.parametrize(
    ("lrs", "batch_sizes"),
    [
        ([0.1, 0.01], [64, 128]),
        pytest.param([0.1, 0.01, 0.001], [32, 64, 128], marks=pytest.mark.slow, id="the-readme-sweep"),
    ],
)
def test_grid_sweep_on_mnist(tmp_path: Path, lrs: list[float], batch_sizes: list[int]):
    out = tmp_path / "sweep"
    result = _sweep(
        "specs/mlp.yaml", "--grid", "lr=" + ",".join(map(str, lrs)), "--grid",
        "batch_size=" + ",".join(map(str, batch_sizes)), "--epochs", "1",
        "--dataset", "mnist", "--data-root", str(SHARED_DATA), "--device", "cpu", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    trials = data["trials"]
    assert len(trials) == len(lrs) * len(batch_sizes)
    assert {(t["overrides"]["lr"], t["overrides"]["batch_size"]) for t in trials} == set(
        itertools.product(lrs, batch_sizes)
    )
    done = [t for t in trials if t["state"] == "complete"]
    assert data["best"]["val_accuracy"] == max(t["val_accuracy"] for t in done)  # chosen on validation
    assert data["best"]["test_accuracy"] > 0.9  # real MNIST, one epoch
    for t in trials:
        assert set(t) >= {"number", "spec", "overrides", "state", "val_accuracy", "test_accuracy", "train_accuracy", "train_loss",
                          "examples_per_sec", "params", "epochs_run", "run_dir", "error"}  # fmt: skip
        assert (Path(t["run_dir"]) / "last.pt").exists() and (Path(t["run_dir"]) / "spec.yaml").exists()
        assert t["params"] == 669_706
    for name in ("results.csv", "results.json", "curves.png", "gap.png", "heatmap.png", "study.db"):
        assert (out / name).exists(), name
    assert len((out / "results.csv").read_text().splitlines()) == len(trials) + 1
    # Each trial is a normal run folder: netspec eval works on it.
    best = data["best"]
    evaluated = run_cli("eval", "specs/mlp.yaml", "--checkpoint", str(Path(best["run_dir"]) / "best.pt"),
                        "--dataset", "mnist", "--data-root", str(SHARED_DATA), "--device", "cpu", "--json")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["test_accuracy"] == pytest.approx(best["test_accuracy"])


def test_architecture_sweep_over_specs_and_variables(write_spec, tmp_path: Path):
    a = write_spec(VAR_SPEC, "a.yaml")
    b = write_spec(VAR_SPEC.replace("name: varnet", "name: varnet_deep"), "b.yaml")
    out = tmp_path / "sweep"
    result = _sweep(str(a), str(b), "--grid", "width=8,16", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    trials = json.loads(result.stdout)["trials"]
    assert sorted((t["spec"], t["overrides"]["width"]) for t in trials) == [
        ("varnet", 8), ("varnet", 16), ("varnet_deep", 8), ("varnet_deep", 16)
    ]  # fmt: skip
    params = {(t["spec"], t["overrides"]["width"]): t["params"] for t in trials}
    assert params[("varnet", 8)] < params[("varnet", 16)]  # the variable changed the architecture


def test_pruning_never_compares_one_architecture_with_another(write_spec, tmp_path: Path):
    # A thin network learns slower than a wide one; with two trials each, no architecture has the two finished
    # peers that pruning waits for, so every trial runs to the end, whichever order the grid takes.
    wide = write_spec(VAR_SPEC.replace("width: 32", "width: 64"), "wide.yaml")
    thin = write_spec(VAR_SPEC.replace("name: varnet", "name: thin").replace("width: 32", "width: 2"), "thin.yaml")
    result = _sweep(str(wide), str(thin), "--grid", "lr=0.1,0.05", "--epochs", "2", "--out", str(tmp_path / "s"),
                    "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pruning: a trial stops early" in result.stderr and "--no-prune" in result.stderr
    trials = json.loads(result.stdout)["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 4 and all(t["epochs_run"] == 2 for t in trials)


def test_failing_trial_is_recorded_and_the_rest_finish(write_spec, tmp_path: Path):
    path = write_spec(VAR_SPEC)
    out = tmp_path / "sweep"
    result = _sweep(str(path), "--grid", "lr=0.1,1e12,0.05", "--no-prune", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    trials = {t["overrides"]["lr"]: t for t in json.loads(result.stdout)["trials"]}
    assert trials[1e12]["state"] == "fail"
    assert "loss became" in trials[1e12]["error"]
    assert trials[0.1]["state"] == trials[0.05]["state"] == "complete"


def test_pruning_stops_a_hopeless_trial(write_spec, tmp_path: Path):
    path = write_spec(VAR_SPEC)
    out = tmp_path / "sweep"
    # With seed 5 the grid runs lr 0.1, 0.05, then 1e-6: two finished trials set the median first.
    result = _sweep(str(path), "--grid", "lr=0.1,0.05,1e-6", "--epochs", "3", "--sweep-seed", "5",
                    "--out", str(out), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    trials = {t["overrides"]["lr"]: t for t in json.loads(result.stdout)["trials"]}
    assert trials[1e-6]["number"] == 2, "the grid order this test relies on changed"
    assert trials[1e-6]["state"] == "pruned"
    assert trials[1e-6]["epochs_run"] < 3
    assert "trial 2 pruned: validation accuracy" in result.stderr and "finished trials of varnet" in result.stderr
    assert trials[0.1]["epochs_run"] == trials[0.05]["epochs_run"] == 3


def test_random_sampler_over_ranges_with_optuna_plots(write_spec, tmp_path: Path):
    path = write_spec(VAR_SPEC.replace("synthetic_size: 2048", "synthetic_size: 256"))
    out = tmp_path / "sweep"
    result = _sweep(str(path), "--grid", "lr=1e-3..0.3:log", "--grid", "width=8..32", "--sampler", "random",
                    "--trials", "12", "--no-prune", "--out", str(out), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    trials = json.loads(result.stdout)["trials"]
    assert len(trials) == 12
    assert all(1e-3 <= t["overrides"]["lr"] <= 0.3 and 8 <= t["overrides"]["width"] <= 32 for t in trials)
    assert all(isinstance(t["overrides"]["width"], int) for t in trials)  # an int range gives ints
    assert (out / "importance.png").exists() and (out / "parallel.png").exists()
    assert not (out / "heatmap.png").exists()  # heatmaps are for two grid keys


def test_sweep_section_in_the_spec(write_spec, tmp_path: Path):
    path = write_spec(VAR_SPEC + "sweep:\n  grid: {width: [8, 16]}\n  prune: false\n")
    out = tmp_path / "sweep"
    result = _sweep(str(path), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert sorted(t["overrides"]["width"] for t in json.loads(result.stdout)["trials"]) == [8, 16]


def _trial_folders(out: Path) -> list[Path]:
    return sorted(p for p in (out / "trials").iterdir() if p.is_dir()) if (out / "trials").exists() else []


def test_killed_sweep_resumes_without_running_a_finished_trial_twice(write_spec, tmp_path: Path):
    path = write_spec(VAR_SPEC.replace("synthetic_size: 2048, epochs: 1", "synthetic_size: 8192, epochs: 3"))
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "netspec.cli", "sweep", str(path), "--grid", "lr=0.1,0.05,0.02", "--no-prune",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # Kill it while the second trial trains, after its first epoch is saved.
    while time.monotonic() < deadline:
        folders = _trial_folders(out)
        metrics = folders[1] / "metrics.json" if len(folders) >= 2 else None
        if metrics is not None and metrics.exists() and json.loads(metrics.read_text()):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {p.name: (p / "last.pt").stat().st_mtime_ns for p in _trial_folders(out)[:1]}
    result = _sweep("--resume", str(out), "--json")
    assert result.returncode == 0, result.stderr
    trials = json.loads(result.stdout)["trials"]
    assert sorted(t["overrides"]["lr"] for t in trials) == [0.02, 0.05, 0.1]  # each grid point once
    assert all(t["state"] == "complete" and t["epochs_run"] == 3 for t in trials)
    assert len(_trial_folders(out)) == 3  # the killed trial continued in its own folder
    for name, mtime in finished_before.items():  # the finished trial was not run again
        assert (out / "trials" / name / "last.pt").stat().st_mtime_ns == mtime
    assert "(resumed)" in result.stderr


def _open_storage(url: str, barrier: Any) -> None:
    from netspec.storage import open_storage

    barrier.wait()  # all at once, as workers started together by a job script
    open_storage(url)


def test_workers_that_start_together_on_a_new_storage_all_connect(tmp_path: Path):
    # Each worker creates Optuna's tables on a new database (check, then insert); the losers of that
    # race used to stop with "UNIQUE constraint failed: alembic_version.version_num".
    context = multiprocessing.get_context("spawn")
    url = f"sqlite:///{tmp_path / 'new.db'}"
    barrier = context.Barrier(4)
    workers = [context.Process(target=_open_storage, args=(url, barrier)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]


def test_two_workers_share_one_storage_and_run_no_trial_twice(write_spec, tmp_path: Path):
    path = write_spec(VAR_SPEC.replace("epochs: 1", "epochs: 3"))  # long enough for both to take trials
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    grid = ["--grid", "lr=0.1,0.05,0.02,0.01", "--no-prune", "--storage", storage]
    command = [sys.executable, "-m", "netspec.cli", "sweep", str(path), *grid]
    workers = [
        subprocess.Popen(
            [*command, "--out", str(tmp_path / f"w{i}")],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    folders = _trial_folders(tmp_path / "w0") + _trial_folders(tmp_path / "w1")
    lrs = sorted(yaml.safe_load((f / "spec.yaml").read_text())["train"]["lr"] for f in folders)
    assert lrs == [0.01, 0.02, 0.05, 0.1]  # every grid point trained once, by one worker or the other
    with sqlite3.connect(tmp_path / "shared.db") as db:
        rows = db.execute(
            "SELECT p.param_value FROM trials t JOIN trial_params p ON p.trial_id = t.trial_id WHERE t.state = 'COMPLETE'"
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted({r[0] for r in rows}) and len(rows) == 4
