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

# Deterministic (2 processes equal 1), and every example trains (no validation split), as the counts below say.
NO_NOISE = VAR_SPEC.replace("  - dropout: {p: $p_drop}\n", "").replace(
    "dataset: synthetic,", "dataset: synthetic, val_split: 0,"
)


def test_trials_run_as_two_process_jobs_and_a_failed_job_fails_its_trial_only(write_spec, tmp_path: Path):
    path = write_spec(NO_NOISE.replace("synthetic_size: 2048, epochs: 1", "synthetic_size: 16384, epochs: 2"))
    out = tmp_path / "sweep"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "netspec.cli", "sweep", str(path), "--grid", "lr=0.1,1e12,0.05", "--no-prune",
         "--nproc-per-node", "2", "--out", str(out), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def training(lr: str) -> Path | None:  # the trial's run folder once its rank-1 worker runs
        runs = list((out / "trials").glob(f"*-lr={lr}")) if (out / "trials").exists() else []
        return runs[0] if runs and (runs[0] / "last.pt").exists() and _worker_pid(runs[0], 1) else None

    killed = wait_until(lambda: training("0.05") or sweep.poll() is not None, 600, "the lr=0.05 trial's workers")
    os.kill(_worker_pid(killed, 1), signal.SIGKILL)
    stdout, stderr = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, stderr
    trials = {t["overrides"]["lr"]: t for t in json.loads(stdout)["trials"]}
    # A worker killed: its trial fails with the launcher's line (rank 0 may have stopped first, having lost rank 1).
    error = trials[0.05]["error"]
    assert (
        trials[0.05]["state"] == "fail"
        and error.startswith("a worker stopped: ")
        and "rank 1 (signal SIGKILL)" in error
    )
    assert f"failed: {error}" in stderr
    # Diverged: the workers' own message.
    assert trials[1e12]["state"] == "fail" and trials[1e12]["error"].startswith("loss became"), trials[1e12]["error"]
    good = trials[0.1]
    assert good["state"] == "complete" and good["epochs_run"] == 2
    run = Path(good["run_dir"])
    assert run.parent == out / "trials"
    assert {"spec.yaml", "last.pt", "best.pt", "metrics.json"} <= {p.name for p in run.iterdir()}
    assert [m["examples"] for m in json.loads((run / "metrics.json").read_text())] == [16384, 16384]  # both ranks
    # The job trained what one process trains with the same settings.
    assert main(["train", str(path), "--lr", "0.1", "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    two = torch.load(run / "last.pt", weights_only=True)["model"]
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5)
    # With no validation split the trial's best.pt is chosen on test: the best epoch's test accuracy.
    reference = max(m["test_accuracy"] for m in json.loads((tmp_path / "one" / "metrics.json").read_text()))
    assert good["test_accuracy"] == pytest.approx(reference)
    assert "epoch 2/2: loss" in stderr  # rank 0's epoch lines, passed on under the trial
