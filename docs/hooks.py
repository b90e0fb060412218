"""mkdocs hooks (mkdocs.yml `hooks:`): the nav lists pages ahead of their writing, and the reference is made
from the code at build time, so that it cannot drift from it.

- on_config leaves out of the nav every page that is neither in docs/ nor generated (pages other people are
  still writing), so that `mkdocs build --strict` passes meanwhile;
- on_files adds the generated reference pages (docs/reference_pages.py), which are never committed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parent


def _reference_module() -> ModuleType:
    """docs/reference_pages.py, loaded by path (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("netspec_reference_pages", DOCS / "reference_pages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _generated_names() -> set[str]:
    path = DOCS / "reference_pages.py"
    return set(_reference_module().PAGES) if path.exists() else set()


def _prune(items: list[Any], exists: set[str]) -> list[Any]:
    """The nav without the pages that do not exist, and without sections left empty."""
    kept: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            ((title, value),) = item.items()
            if isinstance(value, list):
                value = _prune(value, exists)
                if value:
                    kept.append({title: value})
            elif value in exists or "://" in value:
                kept.append(item)
        elif item in exists:
            kept.append(item)
    return kept


def on_config(config: Any, **_: Any) -> Any:
    docs = Path(config["docs_dir"])
    exists = {path.relative_to(docs).as_posix() for path in docs.rglob("*.md")} | _generated_names()
    config["nav"] = _prune(config["nav"], exists)
    return config


def on_files(files: Files, config: Any, **_: Any) -> Files:
    if (DOCS / "reference_pages.py").exists():
        for name, text in _reference_module().generate().items():
            files.append(File.generated(config, name, content=text))
    return files
