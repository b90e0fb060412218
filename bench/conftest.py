"""pytest-benchmark suites: `pytest bench/ --benchmark-only` (see docs/guides/benchmarks.md)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so `bench.` and `tests.` import when pytest runs from anywhere
