"""``callgate check --db PATH --client ID``: the decision by a client's stored policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callgate.domain import GrantRecord, SupervisionEdit
from callgate.policy import parse_document
from callgate.policy.grants import parse_grant_request
from callgate.policy.settings import CallControlSettings
from callgate.store import open_store

SRC = Path(__file__).resolve().parents[2] / "src"
REFERENCE = {
    "groups": {"support": ["100", "101"], "sales": ["102", "101"], "hr": ["100", "101", "103"]},
    "pickup_share_groups": ["support", "sales"],
    "phone_replace_groups": ["support"],
    "eavesdrop_100": ["support"],
    "whisper_101": ["sales", "hr"],
}


def check(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    base["PYTHONPATH"] = f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "callgate", "check", *map(str, args)],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
        check=False,
    )


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "callgate.sqlite3"
    store = await open_store(str(path))
    await store.policies.save("acme", parse_document({"allow_all": True}), "admin")
    await store.policies.save("acme", parse_document(REFERENCE), "admin")
    await store.close()
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("eavesdrop", "100", "101"), ("allow", "eavesdrop_group", [])),
        (("whisper", "100", "101"), ("deny", "whisper_not_permitted", [])),
        (("pickup", "101"), ("allow", "pickup_share_group", ["100", "102"])),
    ],
)
def test_decides_by_the_newest_stored_version(
    db: Path, args: tuple[str, ...], expected: tuple[str, str, list[str]]
) -> None:
    result = check("--db", db, "--client", "acme", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    decision, reason, targets = expected
    assert json.loads(result.stdout) == {"decision": decision, "reason": reason, "targets": targets}
    assert "policy version 2" in result.stderr


def test_a_client_with_nothing_stored_gets_the_default(db: Path) -> None:
    result = check("--db", db, "--client", "globex", "eavesdrop", "100", "101")
    assert result.returncode == 0
    assert json.loads(result.stdout)["reason"] == "eavesdrop_not_permitted"
    allowed = check("--db", db, "--client", "globex", "pickup", "100", "101")
    assert json.loads(allowed.stdout)["reason"] == "pickup_all"


def test_the_store_defaults_to_the_configured_one(db: Path) -> None:
    result = check("--client", "acme", "eavesdrop", "100", "101", env={"CALLGATE_DB": str(db)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["decision"] == "allow"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--db", "{missing}", "--client", "acme", "pickup", "1"), "no store at"),
        (("--db", "{db}", "--client", "bad id", "pickup", "1"), "not a valid client id"),
        (("--db", "{db}", "pickup", "1"), "--client"),
    ],
)
def test_usage_errors_exit_2(db: Path, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    filled = [a.format(db=db, missing=tmp_path / "nope.sqlite3") for a in args]
    result = check(*filled)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "nope.sqlite3").exists()  # a check never creates a store


async def test_protection_and_grants_in_the_store_decide_too(tmp_path: Path) -> None:
    path = tmp_path / "callgate.sqlite3"
    store = await open_store(str(path))
    now = datetime.now(UTC)
    request = parse_grant_request(
        {
            "ext": "100",
            "action": "eavesdrop",
            "extensions": ["102"],
            "from": (now - timedelta(minutes=1)).isoformat(),
            "until": (now + timedelta(hours=1)).isoformat(),
            "note": "coaching",
        }
    )
    record = GrantRecord(request.to_grant(grant_id="g-coach", created_by="ops"), created_at=now)
    try:
        await store.policies.save("acme", parse_document(REFERENCE), "admin")
        await store.supervision.save(
            "acme",
            settings=CallControlSettings(protected_extensions=("101",)),
            grants=(record,),
            changed_by="ops",
            change=SupervisionEdit.GRANT_ADDED,
            grant_id="g-coach",
            if_version=0,
        )
    finally:
        await store.close()
    protected = check("--db", path, "--client", "acme", "eavesdrop", "100", "101")
    assert json.loads(protected.stdout) == {
        "decision": "deny",
        "reason": "protected",
        "targets": [],
    }
    granted = check("--db", path, "--client", "acme", "eavesdrop", "100", "102")
    assert json.loads(granted.stdout) == {
        "decision": "allow",
        "reason": "temporary_grant",
        "targets": [],
        "grant_ids": ["g-coach"],
    }
    assert "settings and grants version 1" in granted.stderr
