"""The policy core stays pure: it imports only the standard library, pydantic and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "callgate" / "policy"
ALLOWED_THIRD_PARTY = {"pydantic", "pydantic_core"}
IO_MODULES = {
    "asyncio", "http", "io", "logging", "os", "pathlib", "select", "selectors", "shutil",
    "socket", "sqlite3", "ssl", "subprocess", "tempfile", "threading", "urllib",
}  # fmt: skip


def imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import; spell out callgate.policy"
            names.append(node.module or "")
    return names


MODULES = sorted(PACKAGE.glob("*.py"))


def test_the_package_has_modules() -> None:
    assert {p.name for p in MODULES} >= {"__init__.py", "types.py", "decide.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_only_stdlib_pydantic_and_itself(path: Path) -> None:
    for name in imported_modules(path):
        top = name.partition(".")[0]
        if name == "callgate.policy" or name.startswith("callgate.policy."):
            continue
        assert top != "callgate", f"{path.name} imports {name}: the policy core stands alone"
        assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, (
            f"{path.name} imports {name}"
        )
        assert top not in IO_MODULES, f"{path.name} imports {name}: the policy core does no I/O"


def test_the_public_api() -> None:
    import callgate.policy as policy

    assert set(policy.__all__) == {
        "PolicyDocument", "parse_document", "PolicyValidationError", "PolicyIssue",
        "CompiledPolicy", "compile_policy", "decide", "Action", "Reason", "Decision",
        "ALL_TARGETS", "is_valid_extension", "is_valid_client_id",
    }  # fmt: skip
    for name in policy.__all__:
        assert getattr(policy, name) is not None
