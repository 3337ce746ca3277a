"""The test suite's own layout: what lets pytest name every test module without a clash.

``pythonpath`` puts ``tests/`` first on ``sys.path`` (the shared fakes are imported by bare
name), so a folder or module there named like a standard-library module would shadow it for
everything, aiohttp included: a ``tests/http`` package would, hence ``tests/http_api``.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_test_folder_is_a_package() -> None:
    # A package's modules are named by their folder (agi.test_x), so two folders may hold files
    # of the same name; a folder without __init__.py would put its files in one flat namespace.
    folders = {path.parent for path in TESTS.rglob("test_*.py")} - {TESTS}
    assert folders
    assert [f for f in sorted(folders) if not (f / "__init__.py").is_file()] == []


def test_nothing_on_the_tests_path_shadows_the_standard_library() -> None:
    names = {p.stem for p in TESTS.glob("*.py")} | {p.name for p in TESTS.iterdir() if p.is_dir()}
    assert sorted(names & sys.stdlib_module_names) == []
