"""The README's commands run as written: every spec a command names is shipped (specs/ or examples/), and the
example commands give exactly the output and exit code the README shows."""

from __future__ import annotations

import glob
import re
import shlex
from itertools import pairwise

import pytest

import netspec
from tests.conftest import ROOT, run_cli

README = (ROOT / "README.md").read_text()
EXAMPLES = ROOT / "examples"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def _console_runs() -> list[tuple[str, list[str]]]:
    """(command, the output lines the README shows under it) for every `$ ...` line of a console block."""
    runs: list[tuple[str, list[str]]] = []
    for block in _blocks("console"):
        for line in block.splitlines():
            if line.startswith("$ "):
                runs.append((line[2:], []))
            elif runs:
                runs[-1][1].append(line)
    return runs


def _words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def _commands() -> list[str]:
    """Every netspec (or torchrun) command line in the README's console and bash blocks."""
    lines = [command for command, _ in _console_runs()]
    lines += [line.strip() for block in _blocks("bash") for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith(("netspec ", "torchrun "))]


# Build commands on shipped examples: run as written, compared with the README's output.
BUILDS = [(command, shown) for command, shown in _console_runs() if command.startswith("netspec build examples/")]


def test_the_readme_shows_every_example_and_ships_every_spec_it_names():
    shipped = {f"examples/{path.name}" for path in EXAMPLES.glob("*.yaml")}
    assert shipped == set(re.findall(r"examples/[\w.-]+\.yaml", README))
    named = {word for command in _commands() for word in _words(command) if word.endswith(".yaml")}
    assert "examples/lenet_typo.yaml" in named and "specs/lenet.yaml" in named
    for name in sorted(named):
        assert glob.glob(str(ROOT / name)), f"the README runs `{name}`, which is not shipped"


def test_every_example_is_a_valid_spec_or_fails_as_the_readme_says():
    failing = {"examples/lenet_typo.yaml", "examples/bad_inception.yaml"}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        name = f"examples/{path.name}"
        if name in failing:
            with pytest.raises(netspec.SpecError):
                netspec.infer_shapes(path)
        else:
            assert netspec.infer_shapes(path).total_params > 0, name
    assert {command.split()[2] for command, _ in BUILDS} >= failing


@pytest.mark.parametrize(("command", "shown"), BUILDS, ids=[" ".join(_words(command)[2:]) for command, _ in BUILDS])
def test_readme_build_commands_give_the_output_shown(command: str, shown: list[str]):
    exact = "\n".join(line.rstrip() for line in shown if not line.startswith("$ ")).strip("\n").splitlines()
    shown = [line for line in exact if line.strip()]
    # The README shows what a terminal that wide shows; a table that fits 80 columns was taken at 80.
    width = max([80, *(len(line) for line in shown)])
    result = run_cli(*_words(command)[1:], env={"COLUMNS": str(width)})
    if shown and shown[0].startswith("error: "):
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.rstrip("\n").splitlines() == shown  # exactly the README's message
    else:
        assert result.returncode == 0, result.stderr
        if not shown:  # the README shows the command alone
            return
        printed = [line.rstrip() for line in result.stdout.splitlines()]
        assert [line for line in shown if line != "..."] == [line for line in printed if line in shown]
        if "..." not in shown:
            assert printed == exact  # blank lines included


def test_the_readme_exit_codes_are_real():
    checked = 0
    for (previous, _), (command, shown) in pairwise(_console_runs()):
        if command == "echo $?" and previous.startswith("netspec build examples/"):
            assert run_cli(*_words(previous)[1:]).returncode == int(shown[0])
            checked += 1
    assert checked


def test_the_distributed_example_is_what_the_readme_says():
    spec = netspec.load_spec(EXAMPLES / "ddp.yaml")  # "a two-layer MLP on 20,000 synthetic 1×8×8 images"
    assert (
        list(spec.input) == [1, 8, 8] and [info.kind for info in netspec.infer_shapes(spec).layers].count("linear") == 2
    )
    assert (spec.train.dataset, spec.train.synthetic_size, spec.train.epochs, spec.train.batch_size) == (
        "synthetic",
        20000,
        6,
        64,
    )
