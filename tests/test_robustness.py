"""Whatever a user feeds the CLI, it says clearly what is wrong, exits non-zero and leaves no partial files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from netspec.errors import CheckpointError
from netspec.fileio import load_checkpoint, save_checkpoint
from tests.conftest import ROOT, run_cli

BOMB = "a: &a [1,2,3,4,5,6,7,8,9]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
)
GOOD = "name: t\ninput: [1, 28, 28]\nlayers: [flatten, {linear: {out_features: 10}}]\ntrain: {dataset: synthetic}\n"


def _file(tmp: Path, content: bytes | str | None, name: str = "spec.yaml") -> str:
    path = tmp / name
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


# (arguments with {spec} and {tmp} placeholders, spec file content, exit code, expected part of stderr)
CASES = [
    pytest.param(["build", "{spec}"], None, 2, "no such file", id="missing-file"),
    pytest.param(["build", "{tmp}"], None, 2, "is a directory, not a spec file", id="directory"),
    pytest.param(["build", "{spec}"], "", 2, "the spec is empty", id="empty-file"),
    pytest.param(["build", "{spec}"], bytes(range(256)) * 4, 2, "not a text file", id="binary-garbage"),
    pytest.param(["build", "{spec}"], b"name: \xff\xfe\n", 2, "not UTF-8 text", id="not-utf8"),
    pytest.param(["build", "{spec}"], BOMB, 2, "document too large or too deeply nested", id="yaml-alias-bomb"),
    pytest.param(["build", "{spec}"], "[" * 50_000, 2, "nested too deeply", id="yaml-deep-nesting"),
    pytest.param(["build", "{spec}"], "name: t\n\tinput: [1]\n", 2, "found character '\\t'", id="tabs"),
    pytest.param(["build", "{spec}"], GOOD + "name: u\n", 2, "duplicate key 'name'", id="duplicate-keys"),
    pytest.param(
        ["build", "{spec}"],
        "name: [1]\ninput: abc\nlayers: 5\n",
        2,
        "spec.yaml:1:7: name: input should be a valid string",
        id="wrong-types",
    ),
    pytest.param(
        ["build", "{spec}", "--frobnicate"], GOOD, 2, "unrecognized arguments: --frobnicate", id="unknown-option"
    ),
    pytest.param(["frobnicate"], GOOD, 2, "invalid choice: 'frobnicate'", id="unknown-command"),
    pytest.param(["train", "{spec}", "--device", "cuda:7"], GOOD, 2, "device 'cuda:7'", id="device-cuda7"),
    pytest.param(["train", "{spec}", "--device", "tpu"], GOOD, 2, "unknown device 'tpu'", id="device-tpu"),
    pytest.param(
        ["train", "{spec}", "--batch-size", "0"], GOOD, 2, "--batch-size: must be at least 1, got 0", id="batch-size-0"
    ),
    pytest.param(
        ["train", "{spec}", "--batch-size", "-1"],
        GOOD,
        2,
        "--batch-size: must be at least 1, got -1",
        id="batch-size-negative",
    ),
    pytest.param(["train", "{spec}", "--epochs", "0"], GOOD, 2, "--epochs: must be at least 1, got 0", id="epochs-0"),
    pytest.param(
        ["train", "{spec}", "--out", "/proc/netspec-run"],
        GOOD,
        1,
        "cannot write to /proc/netspec-run",
        id="non-writable-out",
    ),
    pytest.param(
        ["train", "{spec}", "--out", "{tmp}/spec.yaml/run"], GOOD, 1, "cannot write to", id="out-under-a-file"
    ),
    pytest.param(
        ["train", "{spec}", "--dataset", "mnist", "--data-root", "{tmp}/spec.yaml"],
        GOOD,
        2,  # the user's input: exit 2
        "dataset mnist not found",
        id="data-root-is-a-file",
    ),
    pytest.param(
        ["train", "{spec}", "--dataset", "mnist", "--data-root", "{tmp}/corrupt"],
        GOOD,
        1,
        "cannot read mnist",
        id="corrupt-data-files",
    ),
    pytest.param(
        ["eval", "{spec}", "--checkpoint", "{tmp}/spec.yaml"],
        GOOD,
        1,
        "not a readable checkpoint",
        id="checkpoint-not-a-checkpoint",
    ),
    pytest.param(["train", "--resume", "{tmp}"], GOOD, 1, "holds no checkpoint", id="resume-empty-folder"),
]


@pytest.mark.parametrize(("args", "content", "code", "message"), CASES)
def test_cli_bad_input(tmp_path: Path, args: list[str], content, code: int, message: str):
    spec = _file(tmp_path, content)
    raw = tmp_path / "corrupt" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (raw / name).write_bytes(b"\x00\x00\x08\x03garbage")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = run_cli(*(a.format(spec=spec, tmp=tmp_path) for a in args), cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before  # no partial files, no run folder


# --- checkpoints --------------------------------------------------------------------------------


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(1000)}})
    path.write_bytes(path.read_bytes()[:700])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_checkpoint_with_code_is_refused(tmp_path: Path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "netspec-checkpoint", "payload": os.system}, path)  # a reference to code
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    pickle_path = tmp_path / "raw.pt"
    pickle_path.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(CheckpointError):
        load_checkpoint(pickle_path)


def test_foreign_state_dict_is_not_a_netspec_checkpoint(tmp_path: Path):
    path = tmp_path / "sd.pt"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a netspec checkpoint"):
        load_checkpoint(path)


# --- SIGKILL at random moments ------------------------------------------------------------------

KILL_SPEC = """\
name: kill_me
input: [1, 8, 8]
layers: [flatten, {linear: {out_features: 32}}, relu, {linear: {out_features: 10}}]
train: {dataset: synthetic, synthetic_size: 6000, batch_size: 16, epochs: 4, lr: 0.05}
"""


def _kill_and_resume(tmp_path: Path, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    spec = tmp_path / "kill.yaml"
    spec.write_text(KILL_SPEC)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "netspec.cli", "train", str(spec), "--out", str(run), "--no-progress"]
    for trial in range(trials):
        proc = subprocess.Popen(
            cmd
            if trial == 0
            else [sys.executable, "-m", "netspec.cli", "train", "--resume", str(run), "--no-progress"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        deadline = time.time() + 60
        while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        # Every time: a checkpoint and metrics that load and agree.
        ckpt = load_checkpoint(run / "last.pt")
        metrics = json.loads((run / "metrics.json").read_text())
        saved = ckpt["metrics"]
        # The checkpoint is written before the metrics files: a kill between the two renames
        # leaves the files one epoch behind, never ahead, and never different.
        assert len(saved) - len(metrics) in (0, 1)
        assert metrics == saved[: len(metrics)]
        assert (run / "spec.yaml").exists()
    done = run_cli("train", "--resume", str(run), "--json", "--no-progress")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3, 4]
    assert [m["epoch"] for m in json.loads((run / "metrics.json").read_text())] == [1, 2, 3, 4]
    assert not list(run.glob(".*.tmp"))


def test_sigkill_at_random_moments_then_resume(tmp_path: Path):
    _kill_and_resume(tmp_path, trials=3, seed=0)


def test_resuming_a_finished_run_restores_metrics_files_a_kill_left_behind(tmp_path: Path):
    # A SIGKILL between the checkpoint's rename and the metrics files' leaves the files one epoch behind
    # the checkpoint; resuming (here a finished run, so nothing is trained) writes them again from it.
    spec = tmp_path / "kill.yaml"
    spec.write_text(KILL_SPEC.replace("synthetic_size: 6000", "synthetic_size: 400").replace("epochs: 4", "epochs: 2"))
    run = tmp_path / "run"
    assert run_cli("train", str(spec), "--out", str(run), "--no-progress").returncode == 0
    rows = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(rows[:1]))
    (run / "metrics.csv").write_text((run / "metrics.csv").read_text().splitlines()[0] + "\n")
    done = run_cli("train", "--resume", str(run), "--json", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "metrics.json").read_text()) == rows
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header and two epochs


@pytest.mark.slow
def test_sigkill_many_trials(tmp_path: Path):
    _kill_and_resume(tmp_path, trials=12, seed=1)
