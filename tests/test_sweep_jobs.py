"""`netspec sweep --nproc-per-node N`: every trial a torch.distributed job (through `netspec train
--nproc-per-node N`, torch's elastic launcher), its run folder as in any sweep; a failed job fails
its trial only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from netspec.cli import main
from tests.conftest import ROOT, wait_until
from tests.test_distributed import _worker_pid
from tests.test_sweep import VAR_SPEC

NO_NOISE = VAR_SPEC.replace("  - dropout: {p: $p_drop}\n", "")  # deterministic: 2 processes equal 1


def _trials(stdout: str) -> dict[float, dict]:
    return {t["overrides"]["lr"]: t for t in json.loads(stdout)["trials"]}


def test_trials_run_as_two_process_jobs_and_a_diverging_one_fails_alone(write_spec, tmp_path: Path, capsys):
    path = write_spec(NO_NOISE)
    out = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "netspec.cli", "sweep", str(path), "--grid", "lr=0.1,1e12", "--no-prune",
         "--nproc-per-node", "2", "--out", str(out), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trials = _trials(result.stdout)
    assert trials[1e12]["state"] == "fail"
    assert trials[1e12]["error"].startswith("loss became"), trials[1e12]["error"]  # the workers' own message
    good = trials[0.1]
    assert good["state"] == "complete" and good["epochs_run"] == 1
    run = Path(good["run_dir"])
    assert run.parent == out / "trials" and {"spec.yaml", "last.pt", "best.pt", "metrics.json"} <= {
        p.name for p in run.iterdir()
    }
    assert json.loads((run / "metrics.json").read_text())[0]["examples"] == 2048  # both ranks' shares
    # The job trained what one process trains with the same settings.
    assert main(["train", str(path), "--lr", "0.1", "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    two = torch.load(run / "last.pt", weights_only=True)["model"]
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5)
    assert good["test_accuracy"] == pytest.approx(
        json.loads((tmp_path / "one" / "metrics.json").read_text())[0]["test_accuracy"]
    )
    assert "epoch 1/1: loss" in result.stderr  # rank 0's epoch lines, passed on under the trial


def test_a_killed_worker_fails_its_trial_and_the_sweep_goes_on(write_spec, tmp_path: Path):
    path = write_spec(NO_NOISE.replace("synthetic_size: 2048, epochs: 1", "synthetic_size: 16384, epochs: 2"))
    out = tmp_path / "sweep"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "netspec.cli", "sweep", str(path), "--grid", "lr=0.1,0.05", "--no-prune",
         "--nproc-per-node", "2", "--out", str(out), "--json", "--sweep-seed", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def first_trial_training() -> Path | None:
        runs = sorted((out / "trials").glob("0000-*")) if (out / "trials").exists() else []
        return runs[0] if runs and (runs[0] / "last.pt").exists() and _worker_pid(runs[0], 1) else None

    run = wait_until(first_trial_training, 300, "trial 0's workers")
    os.kill(_worker_pid(run, 1), signal.SIGKILL)
    stdout, stderr = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, stderr
    trials = {t["number"]: t for t in json.loads(stdout)["trials"]}
    assert trials[0]["state"] == "fail"
    error = trials[0]["error"]  # the launcher's line (rank 0 may have stopped first, having lost rank 1)
    assert error.startswith("a worker stopped: ") and "rank 1 (signal SIGKILL)" in error, error
    assert trials[1]["state"] == "complete" and trials[1]["epochs_run"] == 2
    assert f"trial 0 failed: {error}" in stderr
