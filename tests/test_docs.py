"""The docs site builds (`mkdocs build --strict`: no broken link, no missing page, the reference generated from
the code) and says what a user needs without lab notes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once per test session, strictly (a warning is an error)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_the_site_builds_strictly(site: Path):
    assert (site / "index.html").exists()
    assert (site / "search" / "search_index.json").exists()


def _reference_pages() -> dict[str, str]:
    """docs/reference_pages.py's pages, generated afresh from the code (the hook does the same at build time)."""
    spec = importlib.util.spec_from_file_location("netspec_reference_pages", DOCS / "reference_pages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate()


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    return _reference_pages()


def test_every_layer_kind_has_a_reference_entry_with_its_arguments(reference: dict[str, str]):
    from netspec.layers import LAYER_KINDS, MERGE_KINDS, argument_names

    page = reference["reference/layers.md"]
    for kind, cls in [*LAYER_KINDS.items(), *MERGE_KINDS.items()]:
        assert f"\n### {kind}\n" in page, f"layer kind {kind} has no entry in the reference"
        entry = page.split(f"\n### {kind}\n", 1)[1].split("\n### ", 1)[0]
        for argument in argument_names(cls):
            assert f"| `{argument}` |" in entry, f"{kind}'s argument {argument} is missing from its entry"
        assert "```yaml" in entry, f"{kind} has no example: use it in a spec of specs/ or examples/"


def test_every_setting_has_a_reference_entry(reference: dict[str, str]):
    from netspec.config import BenchConfig, SweepConfig, TrainConfig

    page = reference["reference/settings.md"]
    for section, model in (("train", TrainConfig), ("bench", BenchConfig), ("sweep", SweepConfig)):
        table = page.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
        for name in model.model_fields:
            assert f"| `{name}` |" in table, f"{section}: {name} has no entry in the settings reference"


def test_every_option_of_every_command_has_a_reference_entry(reference: dict[str, str]):
    import argparse

    from netspec.cli import make_parser

    page = reference["reference/cli.md"]
    subparsers = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert subparsers.choices
    for command, parser in subparsers.choices.items():
        assert f"\n## netspec {command}\n" in page
        section = page.split(f"\n## netspec {command}\n", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in section, f"netspec {command} {option} has no entry in the reference"


def test_the_outputs_reference_lists_every_run_file_and_exit_code(reference: dict[str, str]):
    from netspec import errors
    from netspec.runfolder import WRITES

    page = reference["reference/outputs.md"]
    for pattern in WRITES["run"] + WRITES["sweep"]:
        assert f"`{pattern}`" in page
    for cls in (errors.SpecError, errors.UsageError, errors.Interrupted, errors.TrainingDiverged):
        assert f"| {cls.exit_code} | `{cls.__name__}` |" in page


def test_the_site_has_the_reference_and_the_api(site: Path):
    for page in ("layers", "settings", "cli", "outputs", "api"):
        assert (site / "reference" / page / "index.html").exists(), page
    api = (site / "reference" / "api" / "index.html").read_text()
    import netspec

    for name in netspec.__all__:
        assert name in api, f"the API reference does not show netspec.{name}"


# Words of a lab notebook, not of documentation: how one machine was loaded on one day, what one session lacked.
LAB_NOTES = [
    r"load average",
    r"earlier run on this",
    r"this (?:VM|session)",
    r"no GPU was (?:available|lent)",
    r"fresh environment",
    r"cache was (?:still )?empty",
    r"another job running",
    r"on this machine",
]


def _prose(markdown: str) -> str:
    """A page without its code blocks and code spans (a command's real output may say anything)."""
    markdown = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    return re.sub(r"`[^`]*`", "", markdown)  # a code span may wrap onto the next line


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_carries_lab_notes(page: Path):
    prose = _prose(page.read_text())
    for pattern in LAB_NOTES:
        found = re.search(pattern, prose, flags=re.IGNORECASE)
        assert not found, f"{page.relative_to(ROOT)}: lab-notebook wording {found.group(0)!r}"


def test_the_readme_is_short_and_keeps_its_two_set_up_lines():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    setup = re.search(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    assert setup is not None
    assert setup.group(1).splitlines() == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]' && netspec build specs/lenet.yaml",
        "python -m pytest",
    ]


def test_the_module_map_names_every_module():
    """docs/contributing.md's module map: every module and package of netspec/ has its line."""
    page = (DOCS / "contributing.md").read_text()
    module_map = page.split("## The module map", 1)[1].split("```", 2)[1]
    package = ROOT / "netspec"
    names = [p.name for p in package.glob("*.py") if not p.name.startswith("__")]
    names += [f"{p.name}/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    for name in names:
        assert re.search(rf"(^|\s){re.escape(name)}\s", module_map, flags=re.MULTILINE), f"the module map lacks {name}"


def test_the_export_guide_names_every_onnx_metadata_key():
    """A key the exporter writes into an ONNX file's metadata is one a user reads: the guide must say what it holds."""
    keys = set(re.findall(r'"(netspec_\w+)"', (ROOT / "netspec" / "exporter.py").read_text()))
    assert "netspec_input" in keys
    guide = (DOCS / "guides" / "export.md").read_text()
    for key in sorted(keys):
        assert f"`{key}`" in guide, f"docs/guides/export.md does not say what the ONNX metadata key {key} holds"
