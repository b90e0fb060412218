"""The docs' commands run as written: every spec a command in README.md or docs/**/*.md names is shipped (specs/
or examples/), and the build commands give exactly the output and exit code the page shows."""

from __future__ import annotations

import glob
import re
import shlex
from itertools import pairwise

import pytest
import yaml

import netspec
from tests.conftest import ROOT, run_cli

# The README and every page of the docs site: a command shown anywhere is held to what it prints.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TEXT = "\n".join(page.read_text() for page in PAGES)
EXAMPLES = ROOT / "examples"


def _blocks(language: str) -> list[str]:
    """The code blocks of one language, also when indented under a list item (the indent is removed)."""
    found = []
    for page in PAGES:
        for indent, body in re.findall(
            rf"^([ \t]*)```{language}\n(.*?)^[ \t]*```", page.read_text(), flags=re.DOTALL | re.MULTILINE
        ):
            found.append("".join(line.removeprefix(indent) for line in body.splitlines(keepends=True)))
    return found


def _console_runs() -> list[tuple[str, list[str]]]:
    """(command, the output lines the page shows under it) for every `$ ...` line of a console block."""
    runs: list[tuple[str, list[str]]] = []
    for block in _blocks("console"):
        output: list[str] | None = None  # lines before a block's first command are output of no command
        for line in block.splitlines():
            if line.startswith("$ "):
                output = []
                runs.append((line[2:], output))
            elif output is not None:
                output.append(line)
    return runs


def _words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def _commands() -> list[str]:
    """Every netspec (or torchrun) command line in the console and bash blocks of the README and the docs."""
    lines = [command for command, _ in _console_runs()]
    lines += [line.strip() for block in _blocks("bash") for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith(("netspec ", "torchrun "))]


# Build commands: run as written, compared with the output the page shows. Builds of the zoo (specs/) too, except
# those whose output depends on the machine (--batch-size: the memory of this device's kernels) or that a page
# shows folded (--json).
BUILDS = sorted(
    {
        (command, tuple(shown))
        for command, shown in _console_runs()
        if command.startswith(("netspec build examples/", "netspec build specs/"))
        and not {"--batch-size", "--json", "--compile"} & set(shlex.split(command, comments=True))
    }
)


def test_the_docs_show_every_example_and_ship_every_spec_they_name():
    shipped = {f"examples/{path.name}" for path in EXAMPLES.glob("*.yaml")}
    shown = set(re.findall(r"examples/[\w.-]+\.yaml", TEXT))
    assert not shipped - shown, f"shipped but shown on no page (README.md or docs/): {sorted(shipped - shown)}"
    assert not shown - shipped, f"shown on a page but not shipped in examples/: {sorted(shown - shipped)}"
    named = {word for command in _commands() for word in _words(command) if word.endswith(".yaml")}
    assert "examples/lenet_typo.yaml" in named and "specs/lenet.yaml" in named
    for name in sorted(named):
        assert glob.glob(str(ROOT / name)), f"the docs run `{name}`, which is not shipped"


def test_every_example_is_a_valid_spec_or_fails_as_the_docs_say():
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
def test_build_commands_give_the_output_shown(command: str, shown: tuple[str, ...]):
    exact = "\n".join(line.rstrip() for line in shown if not line.startswith("$ ")).strip("\n").splitlines()
    shown = [line for line in exact if line.strip()]
    # A page shows what a terminal that wide shows; a table that fits 80 columns was taken at 80.
    width = max([80, *(len(line) for line in shown)])
    result = run_cli(*_words(command)[1:], env={"COLUMNS": str(width)})
    if shown and shown[0].startswith("error: "):
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.rstrip("\n").splitlines() == shown  # exactly the page's message
    else:
        assert result.returncode == 0, result.stderr
        if not shown:  # the page shows the command alone
            return
        printed = [line.rstrip() for line in result.stdout.splitlines()]
        assert [line for line in shown if line != "..."] == [line for line in printed if line in shown]
        if "..." not in shown:
            assert printed == exact  # blank lines included


def test_the_exit_codes_shown_are_real():
    checked = 0
    for (previous, _), (command, shown) in pairwise(_console_runs()):
        if command == "echo $?" and previous.startswith("netspec build examples/"):
            assert run_cli(*_words(previous)[1:]).returncode == int(shown[0])
            checked += 1
    assert checked


def test_the_distributed_example_is_what_the_docs_say():
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


# Options whose value is a file or folder the command reads (--out names what it would write: not read).
READS = {"--data", "--data-root", "--checkpoint", "--init-from", "--resume"}


def _self_contained(command: str) -> bool:
    """A command that needs nothing but the repository: every path it reads is shipped (no run folder or data
    folder made earlier, no dataset outside the repository, no database server)."""
    words = _words(command)
    reads = [value for option, value in pairwise(words) if option in READS]
    reads += [
        word
        for option, word in pairwise(words[1:])  # positionals that look like files: a spec, an image, a run folder
        if not word.startswith("-") and option not in (READS | {"--out"}) and re.search(r"/|\.[a-z]+$", word)
    ]
    specs = [ROOT / word for word in reads if word.endswith(".yaml")]
    reads += [
        str(data) for spec in specs if (data := (yaml.safe_load(spec.read_text()).get("train") or {}).get("data"))
    ]
    writes_a_run = "--out" in words and words[1] != "draw"  # the refusal may rest on what that folder holds
    return (
        "--storage" not in words
        and not writes_a_run
        and all(not p.startswith("..") and (ROOT / p).exists() for p in reads)
    )


# Commands the docs show being refused: each runs as written and prints exactly the message shown (nothing on
# stdout, nothing written, a non-zero exit code), so a message that changes must change in the docs too.
REFUSALS = sorted(
    {
        (command, tuple(shown))
        for command, shown in _console_runs()
        if command.startswith("netspec ")
        and not command.startswith("netspec build ")
        and shown
        and shown[0].startswith("error: ")
        and _self_contained(command)
    }
)


@pytest.mark.parametrize(("command", "shown"), REFUSALS, ids=[" ".join(_words(c)[1:4]) for c, _ in REFUSALS])
def test_refused_commands_give_the_message_shown(command: str, shown: tuple[str, ...]):
    runs = ROOT / "runs"  # where a train command would make its run folder
    before = set(runs.iterdir()) if runs.exists() else set()
    result = run_cli(*_words(command)[1:], env={"COLUMNS": "200"})
    assert result.returncode in (1, 2), result.stderr
    assert result.stdout == ""
    assert result.stderr.rstrip("\n").splitlines() == [line for line in shown if line.strip()]
    assert (set(runs.iterdir()) if runs.exists() else set()) == before  # no run folder
    outputs = [word for option, word in pairwise(_words(command)) if option == "--out"]
    assert not any((ROOT / word).exists() for word in outputs)  # nor the file it was asked to write
