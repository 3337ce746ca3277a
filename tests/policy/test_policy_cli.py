"""``callgate check`` as an operator runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .policy_examples import REFERENCE

SRC = Path(__file__).resolve().parents[2] / "src"


def check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "callgate", "check", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(REFERENCE))
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("pickup", "101"),
            {"decision": "allow", "reason": "pickup_share_group", "targets": ["100", "102"]},
        ),
        (("pickup", "100", "103"), {"decision": "allow", "reason": "pickup_all", "targets": []}),
        (
            ("whisper", "100", "101"),
            {"decision": "deny", "reason": "whisper_not_permitted", "targets": []},
        ),
        (
            ("eavesdrop", "101", "103"),
            {"decision": "allow", "reason": "whisper_group", "targets": []},
        ),
        (("fly", "101"), {"decision": "deny", "reason": "invalid_request", "targets": []}),
    ],
)
def test_prints_one_json_line_and_exits_0(
    reference: Path, args: tuple[str, ...], expected: dict[str, object]
) -> None:
    result = check("--policy", reference, *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == expected


def test_invalid_document_prints_located_errors_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    bad = {**REFERENCE, "eavesdrp_100": ["support"], "pickup_all": "yes"}
    bad["groups"] = {**REFERENCE["groups"], "sales": ["102", "1 01"]}
    path.write_text(json.dumps(bad))
    result = check("--policy", path, "pickup", "100")
    assert result.returncode == 2
    assert "pickup_all" in result.stderr
    assert "groups.sales[1]: '1 01' is not a valid extension" in result.stderr
    assert "Unknown key 'eavesdrp_100'" in result.stderr
    assert len(result.stderr.splitlines()) == 3
    machine = json.loads(result.stdout)
    assert [error["loc"] for error in machine["errors"]] == [
        ["pickup_all"],
        ["groups", "sales", 1],
        ["eavesdrp_100"],
    ]


def test_malformed_json_is_a_clear_message_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"allow_all": tru')
    result = check("--policy", path, "pickup", "100")
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{path}: The document is not valid JSON" in result.stderr


def test_unreadable_file_is_a_clear_message_and_exit_2(tmp_path: Path) -> None:
    result = check("--policy", tmp_path / "missing.json", "pickup", "100")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "cannot read" in result.stderr
    assert "missing.json" in result.stderr


def test_a_policy_source_is_required() -> None:
    result = check("pickup", "100")
    assert result.returncode == 2
    assert "--policy" in result.stderr
