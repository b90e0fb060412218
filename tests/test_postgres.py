"""Sweeps on a real PostgreSQL server (a throwaway cluster, see tests/pgserver.py): several workers on one
study, a worker killed mid-trial, the server restarted mid-sweep, and URLs that cannot work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from netspec.cli import main
from tests.conftest import ROOT, free_port, wait_until
from tests.pgserver import PASSWORD
from tests.test_sweep import VAR_SPEC

# Heartbeats every second, so that a dead worker's trial is taken over in seconds, not minutes.
FAST_HEARTBEAT = {"NETSPEC_SWEEP_HEARTBEAT": "1", "NETSPEC_SWEEP_GRACE": "10", "OMP_NUM_THREADS": "1"}


class Worker:
    """`netspec sweep ... --json` in the background, its output in files (read while it runs)."""

    def __init__(self, args: list[str], folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.stdout_path, self.stderr_path = folder.with_suffix(".out"), folder.with_suffix(".err")
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "netspec.cli", "sweep", *args, "--out", str(folder), "--json"],
                cwd=ROOT, stdout=out, stderr=err, env={**os.environ, **env},
            )  # fmt: skip

    @property
    def err(self) -> str:
        return self.stderr_path.read_text()

    def finish(self, timeout: float = 600) -> dict[str, Any]:
        self.process.wait(timeout=timeout)
        assert self.process.returncode == 0, self.err
        return json.loads(self.stdout_path.read_text())


def _complete_trials(url: str) -> list[tuple[int, dict[str, float]]]:
    """(number, params) of every COMPLETE trial in the database, read with psycopg."""
    import psycopg

    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT t.number, p.param_name, p.param_value FROM trials t JOIN trial_params p USING (trial_id) "
            "WHERE t.state = 'COMPLETE' ORDER BY t.number"
        ).fetchall()
    trials: dict[int, dict[str, float]] = {}
    for number, name, value in rows:
        trials.setdefault(number, {})[name] = value
    return sorted(trials.items())


def _assert_each_point_completed_once(url: str, points: int) -> None:
    params = [tuple(sorted(p.items())) for _, p in _complete_trials(url)]
    assert len(params) == points and len(set(params)) == points, params


def _epochs(run: Path) -> list[dict]:
    try:
        return json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return []


def test_three_workers_on_one_postgres_study_run_each_point_once(write_spec, tmp_path: Path, postgres_url: str):
    path = write_spec(VAR_SPEC)
    grid = ["--grid", "lr=0.1,0.05,0.02", "--grid", "width=8,16", "--no-prune", "--storage", postgres_url]
    workers = [Worker([str(path), *grid], tmp_path / f"w{i}", FAST_HEARTBEAT) for i in range(3)]  # all at once
    results = [w.finish() for w in workers]
    _assert_each_point_completed_once(postgres_url, 6)
    folders = [f for i in range(3) for f in (tmp_path / f"w{i}" / "trials").glob("*") if (f / "last.pt").exists()]
    assert len(folders) == 6  # every grid point trained once, by one worker or another
    # Each worker waits for the others' trials, so all three end with the whole table and the same winner.
    for result in results:
        assert len(result["trials"]) == 6 and all(t["state"] == "complete" for t in result["trials"])
        assert result["best"]["number"] == results[0]["best"]["number"]
        assert result["best"]["val_accuracy"] == max(t["val_accuracy"] for t in result["trials"])
    assert PASSWORD not in "".join(w.err for w in workers)


def test_a_killed_workers_trial_is_taken_over_and_resumed(write_spec, tmp_path: Path, postgres_url: str):
    path = write_spec(VAR_SPEC.replace("synthetic_size: 2048, epochs: 1", "synthetic_size: 8192, epochs: 4"))
    grid = ["--grid", "lr=0.1,0.05,0.02,0.01", "--no-prune", "--storage", postgres_url]
    victim, survivor = (Worker([str(path), *grid], tmp_path / name, FAST_HEARTBEAT) for name in ("victim", "survivor"))

    def half_done() -> Path | None:  # a trial of the victim with 1 to 3 of its 4 epochs saved
        runs = (tmp_path / "victim" / "trials").glob("*")
        return next((run for run in runs if 1 <= len(_epochs(run)) < 4), None)

    run = wait_until(half_done, 240, "a half-done trial of the victim")
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=60)
    saved = torch.load(run / "last.pt", weights_only=True)["epoch"]
    assert 1 <= saved < 4
    killed = int(run.name.split("-", 1)[0])
    result = survivor.finish()
    err = survivor.err
    assert f"trial {killed} sent no heartbeat for 10 s" in err, err
    # The retry continued in the victim's run folder, from the saved epoch on: not from epoch 0.
    taken = next(t for t in result["trials"] if t["run_dir"] == str(run))
    assert taken["number"] != killed and taken["state"] == "complete" and taken["epochs_run"] == 4
    retry_lines = err.split(f"trial {taken['number']}: ", 1)[1].splitlines()
    assert retry_lines[0].endswith("(resumed)"), retry_lines[0]
    assert retry_lines[1].strip().startswith(f"epoch {saved + 1}/4:"), retry_lines[:3]
    assert [m["epoch"] for m in _epochs(run)] == [1, 2, 3, 4]
    _assert_each_point_completed_once(postgres_url, 4)  # no trial completed twice
    assert len(result["trials"]) == 4 and all(t["state"] == "complete" for t in result["trials"])


def test_workers_ride_out_a_server_restart(write_spec, tmp_path: Path, postgres_server: Any, postgres_url: str):
    path = write_spec(VAR_SPEC.replace("synthetic_size: 2048, epochs: 1", "synthetic_size: 4096, epochs: 3"))
    grid = ["--grid", "lr=0.1,0.05,0.02,0.01", "--no-prune", "--storage", postgres_url]
    env = {**FAST_HEARTBEAT, "NETSPEC_SWEEP_GRACE": "60"}  # no takeover while the server is down
    workers = [Worker([str(path), *grid], tmp_path / f"w{i}", env) for i in range(2)]
    wait_until(lambda: any(_epochs(r) for w in workers for r in (w.folder / "trials").glob("*")), 240, "an epoch")
    postgres_server.stop("fast")  # every connection is cut
    lost = f"lost the connection to the study's database at 127.0.0.1:{postgres_server.port} ("
    wait_until(lambda: all(lost in w.err for w in workers), 120, "both workers to notice", interval=0.5)
    postgres_server.start()
    results = [w.finish() for w in workers]
    for worker in workers:
        assert "retrying for up to 600 s" in worker.err
        assert "reconnected to the study's database at 127.0.0.1:" in worker.err, worker.err
        assert "Traceback" not in worker.err
    _assert_each_point_completed_once(postgres_url, 4)
    assert all(len(r["trials"]) == 4 and {t["state"] for t in r["trials"]} == {"complete"} for r in results)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "wrong-password",
            "cannot connect to the database server at 127.0.0.1:{port}: the server refused the login (password "
            'authentication failed for user "sweeper"); check the user and password',
        ),
        (
            "nothing-listening",
            "cannot connect to the database server at 127.0.0.1:{port}: nothing accepts connections there "
            "(connection refused); is the server running",
        ),
        (
            "no-database",
            'cannot connect to the database server at 127.0.0.1:{port}: database "nosuchdb" does not exist',
        ),
    ],
    ids=["wrong-password", "nothing-listening", "no-database"],
)
def test_a_database_that_cannot_be_used_is_one_line_before_any_folder(
    write_spec, capsys, tmp_path: Path, postgres_server: Any, postgres_url: str, case: str, message: str
):
    path = write_spec(VAR_SPEC)
    url, port = postgres_url, postgres_server.port
    if case == "wrong-password":
        url = url.replace(PASSWORD, "not-the-password")
    elif case == "nothing-listening":
        port = free_port()
        url = url.replace(f":{postgres_server.port}/", f":{port}/")
    else:
        url = url.rsplit("/", 1)[0] + "/nosuchdb"
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "--grid", "lr=0.1", "--storage", url, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --storage postgresql://sweeper:***@127.0.0.1:"), err
    assert message.format(port=port) in err
    assert PASSWORD not in err and "not-the-password" not in err
    assert not out.exists()
