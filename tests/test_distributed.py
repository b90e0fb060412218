"""`netspec train` across processes (torch.distributed, gloo on CPU), launched by torch's own launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.conftest import ROOT, run_cli

# No batch norm, no dropout: the run is deterministic, so 2 processes must equal 1 exactly (up to float sums).
SPEC = """\
name: ddpnet
input: [1, 8, 8]
layers:
  - flatten
  - linear: {out_features: 32}
  - relu
  - linear: {out_features: 10}
train: {dataset: synthetic, val_split: 0, synthetic_size: 1000, epochs: 2, batch_size: 64, lr: 0.1, momentum: 0.9, device: cpu}
"""


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def _metrics(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())


def test_two_processes_give_the_same_weights_as_one(write_spec, tmp_path: Path):
    path = write_spec(SPEC)
    one = run_cli("train", str(path), "--out", str(tmp_path / "one"), "--no-progress")
    assert one.returncode == 0, one.stderr
    two = run_cli("train", str(path), "--out", str(tmp_path / "two"), "--no-progress", "--nproc-per-node", "2")
    assert two.returncode == 0, two.stderr
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)
    # The last global batch (1000 = 15·64 + 40) is split 20/20; the metrics are global, as one process's.
    for m1, m2 in zip(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"), strict=True):
        assert m2["examples"] == m1["examples"] == 1000
        assert abs(m2["train_loss"] - m1["train_loss"]) < 1e-5
        assert m2["test_accuracy"] == m1["test_accuracy"]
    assert two.stdout.count("epoch 1/2") == 1  # rank 0 reports, once


def test_torchrun_writes_one_run_folder_covering_every_example(write_spec, tmp_path: Path):
    path = write_spec(SPEC.replace("synthetic_size: 1000", "synthetic_size: 999"))  # an odd last batch: 39
    # torch's own launcher, as a user would type `torchrun --nproc-per-node 2 -m netspec train SPEC`.
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "netspec", "train", str(path), "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1  # only rank 0 wrote, one folder
    run = runs[0]
    assert {p.name for p in run.iterdir()} >= {"spec.yaml", "last.pt", "best.pt", "metrics.json", "curves.png"}
    assert [m["examples"] for m in _metrics(run)] == [999, 999]  # every training example, once per epoch


def test_a_batch_that_does_not_divide_is_refused(write_spec):
    path = write_spec(SPEC)
    result = run_cli("train", str(path), "--nproc-per-node", "2", "--batch-size", "63")
    assert result.returncode == 2
    assert "batch size 63 does not divide among 2 processes" in result.stderr and "Traceback" not in result.stderr


def _worker_pid(run: Path, local_rank: int) -> int | None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if str(run) in cmdline and "netspec.cli" in cmdline and f"LOCAL_RANK={local_rank}" in environ:
            return int(pid)
    return None


def test_a_killed_worker_stops_the_job_clearly_and_the_run_resumes(write_spec, tmp_path: Path):
    path = write_spec(SPEC.replace("synthetic_size: 1000, epochs: 2", "synthetic_size: 20000, epochs: 5"))
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "netspec.cli", "train", str(path), "--out", str(run), "--no-progress",
         "--nproc-per-node", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # after the first epoch's checkpoint
        if (run / "metrics.json").exists() and _metrics(run):
            break
        time.sleep(0.05)
    pid = _worker_pid(run, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)  # no hang
    assert launcher.returncode == 1, err
    # The launcher's line; a dying worker writes to the same stderr, so it need not be the last line.
    line = next((x for x in err.splitlines() if x.startswith("error: a worker stopped: ")), "")
    assert "rank 1 (signal SIGKILL)" in line, err
    assert f"resume with: netspec train --resume {run}" in line, err
    done_before = len(_metrics(run))
    assert done_before < 5
    resumed = run_cli("train", "--resume", str(run), "--no-progress", "--nproc-per-node", "2")
    assert resumed.returncode == 0, resumed.stderr
    metrics = _metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5]
    assert all(m["examples"] == 20000 for m in metrics)


def _wait_for_first_epoch(run: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "metrics.json").exists() and _metrics(run):
            return
        time.sleep(0.05)
    raise AssertionError("no epoch finished in time")


def test_ctrl_c_stops_all_ranks_at_one_step_and_the_resume_is_exact(write_spec, tmp_path: Path):
    path = write_spec(SPEC.replace("synthetic_size: 1000, epochs: 2", "synthetic_size: 20000, epochs: 3"))
    reference = run_cli("train", str(path), "--out", str(tmp_path / "reference"), "--no-progress")
    assert reference.returncode == 0, reference.stderr
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "netspec.cli", "train", str(path), "--out", str(run), "--no-progress",
         "--nproc-per-node", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    _wait_for_first_epoch(run)
    time.sleep(0.3)
    os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process gets SIGINT
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, err
    assert (
        err.strip().splitlines()[-1]
        == f"error: interrupted; the workers saved the run's exact state; resume with: netspec train --resume {run}"
    )
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["epoch"] >= 1 and checkpoint["batch"] > 0  # mid-epoch
    assert checkpoint["partial"]["seen"] == checkpoint["batch"] * 64  # both ranks' shares, summed
    resumed = run_cli("train", "--resume", str(run), "--no-progress", "--nproc-per-node", "2")
    assert resumed.returncode == 0, resumed.stderr
    for got, want in zip(_metrics(run), _metrics(tmp_path / "reference"), strict=True):
        assert got["examples"] == want["examples"] == 20000
        assert abs(got["train_loss"] - want["train_loss"]) < 1e-5
        assert abs(got["test_accuracy"] - want["test_accuracy"]) < 1e-9


def test_max_restarts_resumes_the_run_after_a_worker_dies(write_spec, tmp_path: Path):
    path = write_spec(SPEC.replace("synthetic_size: 1000, epochs: 2", "synthetic_size: 20000, epochs: 4"))
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "netspec.cli", "train", str(path), "--out", str(run), "--no-progress",
         "--nproc-per-node", "2", "--max-restarts", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_first_epoch(run)
    pid = _worker_pid(run, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = launcher.communicate(timeout=180)
    assert launcher.returncode == 0, err  # torchrun restarted the workers, which resumed instead of starting over
    assert [m["epoch"] for m in _metrics(run)] == [1, 2, 3, 4]
