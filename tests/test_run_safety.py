"""No work is lost: a run or sweep folder is never overwritten by accident, two processes never write one folder,
a stop request always leaves something `--resume` can finish, and a full disk names the file it could not write."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netspec import runfolder
from netspec.cli import main
from netspec.errors import Interrupted
from netspec.train import train
from tests.conftest import ROOT, run_cli, wait_until

VARNET = ROOT / "examples" / "varnet.yaml"
SMALL = ["--synthetic-size", "256", "--no-progress"]


def _train(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("train", str(VARNET), "--out", str(out), *SMALL, *extra)


def _rows(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())


def _events(run: Path) -> list[Path]:
    return sorted(run.glob("events.out.tfevents.*"))


def test_a_finished_run_survives_train_into_its_folder(tmp_path: Path):
    run = tmp_path / "wine"
    assert _train(run, "--epochs", "3").returncode == 0
    before = (run / "metrics.csv").read_text(), (run / "best.pt").read_bytes(), _events(run)
    again = _train(run, "--epochs", "1")
    assert again.returncode == 2
    message = again.stderr
    assert f"--out {run} already holds a finished run (3 of 3 epochs)" in message
    assert f"netspec train --resume {run} --epochs N" in message  # extend it
    assert f"--out {run}-2 is free" in message and "--overwrite" in message
    assert "Traceback" not in message
    assert ((run / "metrics.csv").read_text(), (run / "best.pt").read_bytes(), _events(run)) == before


def test_an_interrupted_run_is_refused_with_resume_offered(tmp_path: Path):
    run = tmp_path / "r"

    def stop_after_first_epoch(metrics) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(VARNET, {"epochs": 3, "synthetic_size": 256}, out=run, progress=False, on_epoch=stop_after_first_epoch,
              report=lambda line: None)  # fmt: skip
    again = _train(run, "--epochs", "3")
    assert again.returncode == 2
    assert "holds an unfinished run (1 of 3 epochs)" in again.stderr
    assert f"Continue it with `netspec train --resume {run}`" in again.stderr
    assert len(_rows(run)) == 1
    resumed = run_cli("train", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert [row["epoch"] for row in _rows(run)] == [1, 2, 3]


def test_overwrite_replaces_the_whole_run(tmp_path: Path):
    run = tmp_path / "r"
    assert _train(run, "--epochs", "2").returncode == 0
    replaced = _train(run, "--epochs", "1", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert len(_rows(run)) == 1
    assert len(_events(run)) == 1  # the old run's TensorBoard events went with it


def test_files_netspec_did_not_write_are_never_touched(tmp_path: Path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    assert _train(folder, "--epochs", "1").returncode == 0  # the run goes beside it
    assert _train(folder, "--epochs", "1", "--overwrite").returncode == 0
    assert (folder / "chapter1.tex").read_text() == "precious" and len(_rows(folder)) == 1


def test_a_file_the_run_would_write_over_is_refused(tmp_path: Path):
    (tmp_path / "spec.yaml").write_text(VARNET.read_text() + "# my notes\n")  # the user's spec, beside --out .
    result = run_cli("train", "spec.yaml", "--out", ".", *SMALL, "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert "--out . holds spec.yaml, which the run would write over" in result.stderr
    assert (tmp_path / "spec.yaml").read_text().endswith("# my notes\n")


def test_an_empty_out_folder_is_used(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "empty", "--epochs", "1").returncode == 0


def test_two_processes_never_write_one_folder(tmp_path: Path):
    run = tmp_path / "r"
    held = runfolder.claim(run, "run")  # as a `train` in another process holds it while it trains
    try:
        second = _train(run, "--epochs", "1")
        assert second.returncode == 2
        assert f"{run} is in use by another netspec process" in second.stderr
        resumed = run_cli("train", "--resume", str(run))
        assert resumed.returncode != 0
    finally:
        held.release()
    assert _train(run, "--epochs", "1").returncode == 0  # released: the folder is free again


def test_resume_and_overwrite_together_are_refused(tmp_path: Path):
    result = run_cli("train", "--resume", str(tmp_path), "--overwrite")
    assert result.returncode == 2 and "give one of them" in result.stderr


def test_a_stop_request_after_the_last_epoch_leaves_a_complete_run(tmp_path: Path):
    run = tmp_path / "r"
    with pytest.raises(Interrupted, match="after the last epoch; the run is complete"):
        train(VARNET, {"epochs": 1, "synthetic_size": 256}, out=run, progress=False, report=lambda line: None,
              on_epoch=lambda m: os.kill(os.getpid(), signal.SIGTERM))  # fmt: skip
    assert len(_rows(run)) == 1 and (run / "curves.png").exists() and (run / "best.pt").exists()
    lines: list[str] = []
    result = train(resume=run, progress=False, report=lines.append)
    assert result.last.epoch == 1 and any("already finished" in line for line in lines)


def test_a_full_disk_names_the_file(tmp_path: Path, monkeypatch, capsys):
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code = main(["train", str(VARNET), "--out", str(tmp_path / "r"), "--epochs", "1", *SMALL])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot write {tmp_path / 'r'}" in err and "No space left on device" in err
    assert "free some disk space" in err and "internal error" not in err
    assert not list((tmp_path / "r").glob(".*.tmp"))  # no half-written file left behind


# --- sweeps --------------------------------------------------------------------------------------


def _sweep(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("sweep", str(VARNET), "--grid", "lr=0.1,0.05", "--no-prune", "--out", str(out), *extra, "--json")


def test_a_finished_sweep_survives_sweep_into_its_folder(tmp_path: Path):
    out = tmp_path / "s"
    assert _sweep(out, "--synthetic-size", "256").returncode == 0
    before = (out / "results.json").read_text()
    again = run_cli("sweep", str(VARNET), "--grid", "lr=0.2", "--out", str(out))
    assert again.returncode == 2
    assert f"--out {out} already holds a sweep (2 trials recorded)" in again.stderr
    assert f"netspec sweep --resume {out}" in again.stderr and "--overwrite" in again.stderr
    assert (out / "results.json").read_text() == before
    assert json.loads((out / "sweep.json").read_text())["dimensions"][0]["values"] == [0.1, 0.05]


def test_ctrl_c_in_a_sweep_stops_it_and_resume_finishes_every_trial(tmp_path: Path):
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "netspec.cli", "sweep", str(VARNET), "--grid", "lr=0.1,0.05,0.02", "--epochs", "2",
           "--no-prune", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def first_trial_trained() -> bool:
        folders = sorted((out / "trials").glob("0000-*/metrics.json")) if (out / "trials").exists() else []
        try:
            return bool(folders) and len(json.loads(folders[0].read_text())) == 2
        except ValueError:
            return False

    wait_until(first_trial_trained, 120, "the first trial's last epoch", interval=0.02)
    proc.send_signal(signal.SIGINT)  # around the first trial's end: its plots, or the second trial's start
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert f"netspec sweep --resume {out}" in stderr and "Traceback" not in stderr
    time.sleep(0.1)
    resumed = run_cli("sweep", "--resume", str(out), "--json")
    assert resumed.returncode == 0, resumed.stderr
    trials = json.loads(resumed.stdout)["trials"]
    assert sorted(t["overrides"]["lr"] for t in trials) == [0.02, 0.05, 0.1]
    assert all(t["state"] == "complete" and t["epochs_run"] == 2 for t in trials)


def test_a_full_disk_during_export_names_the_file(tmp_path: Path, monkeypatch, capsys):
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code = main(["export", str(ROOT / "specs" / "lenet.yaml"), "--format", "python", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and f"cannot write {tmp_path / 'lenet.py'}" in err and "No space left on device" in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written
