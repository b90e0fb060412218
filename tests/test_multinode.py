"""`netspec train` across two machines, simulated on this one: two launchers (one per "node") that form
one job through torch's rendezvous, static (--nnodes 2 --node-rank R) or elastic (c10d, --nnodes 1:2),
and what happens when one node's launcher is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from netspec.cli import main
from tests.conftest import ROOT, free_port, run_cli, wait_until
from tests.test_distributed import SPEC

LONG_SPEC = SPEC.replace("synthetic_size: 1000, epochs: 2", "synthetic_size: 20000, epochs: 3")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def _metrics(run: Path) -> list[dict]:
    try:
        return json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return []


def _assert_same_weights(run: Path, reference: Path) -> None:
    a, b = _weights(reference), _weights(run)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)


def _rendezvous(kind: str, port: int, node_rank: int) -> list[str]:
    if kind == "static":
        return ["--nnodes", "2", "--node-rank", str(node_rank), "--master-addr", "127.0.0.1",
                "--master-port", str(port)]  # fmt: skip
    return ["--nnodes", "1:2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--local-addr", "127.0.0.1"]  # fmt: skip


class Node:
    """One machine's `netspec train ... --nproc-per-node 1` launcher, its output in a file."""

    def __init__(self, args: list[str], log: Path, cwd: Path) -> None:
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "netspec.cli", "train", *args, "--no-progress", "--nproc-per-node", "1"],
                cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
            )  # fmt: skip

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 600) -> int:
        return self.process.wait(timeout=timeout)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a launcher's workers)."""

    def parent(child: str) -> int | None:
        try:
            return int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None

    return [int(child) for child in os.listdir("/proc") if child.isdigit() and parent(child) == pid]


def _two_nodes(kind: str, args: list[str], tmp_path: Path, tag: str, extra: list[str] = ()) -> list[Node]:
    """Node 0 and node 1 of one job. An elastic job's rendezvous store is served by the first launcher, so
    node 1 starts once node 0 listens: node 1 is then the one that can die without taking the store along."""
    port = free_port()
    first = Node([*args, *_rendezvous(kind, port, 0), *extra], tmp_path / f"{tag}-node0.log", tmp_path)
    if kind == "elastic":
        wait_until(lambda: _listening(port) or first.process.poll() is not None, 120, "the rendezvous store")
    second = Node([*args, *_rendezvous(kind, port, 1), *extra], tmp_path / f"{tag}-node1.log", tmp_path)
    return [first, second]


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """LONG_SPEC and its run in one process: what every interrupted two-node run must end up with."""
    folder = tmp_path_factory.mktemp("reference")
    path = folder / "ddp.yaml"
    path.write_text(LONG_SPEC)
    assert main(["train", str(path), "--out", str(folder / "run"), "--no-progress"]) == 0
    return path, folder / "run"


@pytest.mark.parametrize("kind", ["static", "elastic"])
def test_two_nodes_train_like_one_process(write_spec, tmp_path: Path, kind: str):
    path = write_spec(SPEC)
    assert main(["train", str(path), "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    run = tmp_path / "two"
    nodes = _two_nodes(kind, [str(path), "--out", str(run)], tmp_path, kind)
    for node in nodes:
        assert node.wait() == 0, node.output
    _assert_same_weights(run, tmp_path / "one")  # the same global batch of 64, split 32/32 over the nodes
    for m1, m2 in zip(_metrics(tmp_path / "one"), _metrics(run), strict=True):
        assert m2["examples"] == m1["examples"] == 1000  # metrics over both ranks
        assert abs(m2["train_loss"] - m1["train_loss"]) < 1e-5
        assert m2["test_accuracy"] == m1["test_accuracy"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["one", "two"]  # one run folder
    assert sum(node.output.count("epoch 1/2:") for node in nodes) == 1  # global rank 0 reports, once


def test_elastic_job_with_max_restarts_goes_on_without_a_killed_node(tmp_path: Path, long_reference):
    spec, reference = long_reference
    run = tmp_path / "run"
    survivor, victim = _two_nodes(
        "elastic", [str(spec), "--out", str(run)], tmp_path, "restart",
        ["--max-restarts", "1", "--rdzv-conf", "last_call_timeout=10"],
    )  # fmt: skip
    # The survivor may have met alone before the victim joined (after last_call_timeout); wait for the victim's
    # worker, then for an epoch the two trained together.
    wait_until(lambda: _children(victim.process.pid), 300, "the victim's worker")
    started = time.time()

    def an_epoch_together() -> bool:
        return bool(_metrics(run)) and (run / "metrics.json").stat().st_mtime > started

    wait_until(lambda: an_epoch_together() or survivor.process.poll() is not None, 300, "an epoch of both nodes")
    assert len(_metrics(run)) < 3
    victim.process.send_signal(signal.SIGKILL)  # kill -9 of the launcher, mid-epoch
    assert victim.wait() == -signal.SIGKILL
    assert survivor.wait() == 0, survivor.output  # it restarted its worker, alone, from the checkpoint
    assert "error: interrupted at epoch " in victim.output, victim.output  # its worker stopped and saved
    assert [m["epoch"] for m in _metrics(run)] == [1, 2, 3]
    assert all(m["examples"] == 20000 for m in _metrics(run))
    _assert_same_weights(run, reference)  # the resumed epochs are the ones an uninterrupted run trains


def test_static_job_stops_on_both_nodes_when_one_launcher_is_killed_and_resumes(tmp_path: Path, long_reference):
    spec, reference = long_reference
    run = tmp_path / "run"
    node0, node1 = _two_nodes("static", [str(spec), "--out", str(run)], tmp_path, "kill")
    wait_until(lambda: _metrics(run) or node0.process.poll() is not None, 300, "the first epoch")
    node1.process.send_signal(signal.SIGKILL)
    assert node1.wait() == -signal.SIGKILL
    assert node0.wait() == 130
    resume = f"resume with: netspec train --resume {run} and the launch options, on each machine"
    last0 = node0.output.strip().splitlines()[-1]
    assert (
        last0 == f"error: the job was interrupted on another machine; the workers saved the run's exact state; {resume}"
    )
    assert "[rank 1] error: interrupted at epoch 2, step " in node1.output, node1.output
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["batch"] > 0  # the exact mid-epoch state
    nodes = _two_nodes("static", ["--resume", str(run)], tmp_path, "resume")
    for node in nodes:
        assert node.wait() == 0, node.output
    assert [m["epoch"] for m in _metrics(run)] == [1, 2, 3]
    _assert_same_weights(run, reference)


@pytest.mark.slow
def test_a_node_that_dies_stops_the_job_and_any_number_of_processes_resumes(tmp_path: Path, long_reference):
    spec, reference = long_reference
    run = tmp_path / "run"
    node0, node1 = _two_nodes("static", [str(spec), "--out", str(run)], tmp_path, "die")
    wait_until(lambda: _metrics(run) or node0.process.poll() is not None, 300, "the first epoch")
    # The whole machine dies: its launcher and its worker (in a session of its own) at once.
    for pid in [node1.process.pid, *_children(node1.process.pid)]:
        os.kill(pid, signal.SIGKILL)
    assert node0.wait() == 1
    lines = node0.output.strip().splitlines()
    assert lines[-1].startswith("error: a worker stopped: rank 0 (exit code 1); every worker on this machine was "
                                f"stopped, the run folder keeps its last checkpoint; resume with: netspec train "
                                f"--resume {run}")  # fmt: skip
    assert any(line.startswith("error: lost contact with the other workers (") for line in lines), lines
    resumed = run_cli("train", "--resume", str(run), "--no-progress", "--nproc-per-node", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert [m["epoch"] for m in _metrics(run)] == [1, 2, 3]
    _assert_same_weights(run, reference)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nnodes", "2", "--node-rank", "1", "--master-addr", "127.0.0.1", "--master-port", "29500"],
         "--nnodes 2: a job across machines needs --out RUN_DIR, the same folder on every machine"),
        (["--nnodes", "1:2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:29500"],
         "--nnodes 1:2: a job across machines needs --out RUN_DIR"),
    ],
    ids=["static", "elastic"],
)  # fmt: skip
def test_a_job_across_machines_needs_one_named_run_folder(write_spec, capsys, tmp_path, args, message):
    path = write_spec(SPEC)
    assert main(["train", str(path), "--nproc-per-node", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_a_launch_into_a_finished_run_folder_is_refused(write_spec, capsys, tmp_path: Path):
    path = write_spec(SPEC)
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--no-progress"]) == 0
    before = (run / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", str(path), "--out", str(run), "--nproc-per-node", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {run} already holds a finished run (") and "nothing was changed" in err
    assert f"netspec train --resume {run} --epochs N" in err and "--overwrite" in err  # the same refusal as one process
    assert (run / "last.pt").stat().st_mtime_ns == before
