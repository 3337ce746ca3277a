"""The console's picture and preview with protected extensions and grants: each cell decided as
FastAGI decides it (the registry's compiled supervision, at the current time), the picture
carrying what it was decided with, never served past the instant a grant starts or ends, and the
preview judging both sides at one instant with the client's settings and grants.

The clock is the supervision service's, injected here: a grant expires when the test moves it.
The preview's live sessions need the whole daemon (a FastAGI decision, then ChanSpy on the fake
Manager), on the real clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from callgate.daemon import Services
from callgate.http.app import HttpDeps, build_app
from callgate.metrics import Metrics
from callgate.policy.matrix import ACTIONS, decide_cell
from callgate.registry import PolicyRegistry
from callgate.services import SupervisionService
from callgate.store import Store
from console.daemon_support import (  # daemon: a fixture (fake: tests/conftest.py)
    ADMIN,
    base_url,
    daemon,
    start_listen,
)
from fake_ami import FakeAmi
from reference_policy import REFERENCE_DOCUMENT
from support import wait_until
from wiring import app_services

from .http_support import ADMIN as HARNESS_ADMIN
from .http_support import ADMIN_TOKEN, CLIENT, POLICY_URL

__all__ = ["daemon"]  # a fixture, imported

SETTINGS_URL = f"/client/{CLIENT}/call_control_settings"
GRANTS_URL = f"/client/{CLIENT}/grants"
HOUR = timedelta(hours=1)


@dataclasses.dataclass
class Clocked:
    """The HTTP application on a real store, its supervision service on a clock the test moves."""

    client: TestClient[object, object]
    registry: PolicyRegistry
    now: list[datetime]

    def advance(self, by: timedelta) -> None:
        self.now[0] += by

    async def get(self, path: str) -> dict[str, Any]:
        response = await self.client.get(path, headers=HARNESS_ADMIN)
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body

    async def send(self, method: str, url: str, body: object) -> dict[str, Any]:
        response = await self.client.request(method, url, json=body, headers=HARNESS_ADMIN)
        assert response.status in (200, 201), await response.text()
        answer: dict[str, Any] = await response.json()
        return answer

    async def grant(self, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ext": "100",
            "action": "eavesdrop",
            "extensions": ["102"],
            "from": (self.now[0] - HOUR).isoformat(),
            "until": (self.now[0] + HOUR).isoformat(),
            "note": "coaching sales, ticket HR-123",
        }
        return await self.send("POST", GRANTS_URL, {**body, **fields})


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Clocked]:
    registry = PolicyRegistry()
    now = [datetime.now(UTC).replace(microsecond=0)]
    services = app_services(store, registry)
    supervision = SupervisionService(store.supervision, registry, clock=lambda: now[0])
    app = build_app(
        HttpDeps(
            services=dataclasses.replace(services, supervision=supervision),
            metrics=Metrics(),
            admin_token=ADMIN_TOKEN,
        )
    )
    client: TestClient[object, object] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    await client.put(POLICY_URL, json=REFERENCE_DOCUMENT, headers=HARNESS_ADMIN)
    yield Clocked(client, registry, now)
    await client.close()


def cell(picture: dict[str, Any], action: str, ext: str, target: str) -> dict[str, Any]:
    exts: list[str] = picture["extensions"]
    width, alphabet = picture["width"], picture["alphabet"]
    digits = picture["cells"][action][exts.index(ext)]
    code = 0
    for char in digits[exts.index(target) * width : (exts.index(target) + 1) * width]:
        code = code * 64 + alphabet.index(char)
    entry: dict[str, Any] = picture["legend"][code]
    return entry


def view_cell(view: dict[str, Any], side: str, action: str, other: str) -> dict[str, Any]:
    at = view["others"].index(other) * view["width"]
    code = 0
    for char in view[side][action][at : at + view["width"]]:
        code = code * 64 + view["alphabet"].index(char)
    entry: dict[str, Any] = view["legend"][code]
    return entry


def as_decided(api: Clocked, picture: dict[str, Any]) -> None:
    """Every cell is ``decide()`` with the registry's supervision at the test's now."""
    policy = api.registry.get(CLIENT)
    for action in ACTIONS:
        for ext in picture["extensions"]:
            for target in picture["extensions"]:
                entry = cell(picture, action, ext, target)
                expected = decide_cell(
                    policy.compiled,
                    action,
                    ext,
                    target,
                    now=api.now[0],
                    supervision=policy.supervision,
                )
                got = (entry["allowed"], entry["reason"], entry["group"])
                assert (*got, tuple(entry.get("grant_ids", ()))) == expected


async def test_a_protected_target_s_listen_and_whisper_cells_say_protected(api: Clocked) -> None:
    before = await api.get(POLICY_URL + "matrix")
    assert cell(before, "eavesdrop", "100", "101")["reason"] == "eavesdrop_group"
    assert before["supervision"] == {
        "version": 0,
        "protected_extensions": [],
        "grants": [],
        "valid_until": None,
    }
    await api.send("PUT", SETTINGS_URL, {"protected_extensions": ["101", "999"]})

    matrix = await api.get(POLICY_URL + "matrix")
    assert matrix["supervision"]["protected_extensions"] == ["101", "999"]
    assert matrix["supervision"]["version"] == 1
    # 999 is named by no document: protected, it still has its column.
    assert matrix["extensions"] == ["100", "101", "102", "103", "999"]
    for action, ext in (("eavesdrop", "100"), ("whisper", "103"), ("eavesdrop", "102")):
        assert cell(matrix, action, ext, "101") == {
            "allowed": False,
            "reason": "protected",
            "group": None,
        }
    assert cell(matrix, "eavesdrop", "101", "999")["reason"] == "protected"
    assert cell(matrix, "pickup", "100", "101")["allowed"]  # protection is from being heard
    assert cell(matrix, "eavesdrop", "101", "100")["reason"] == "whisper_group"
    as_decided(api, matrix)

    view = await api.get(POLICY_URL + "matrix/extension/101")
    assert view_cell(view, "column", "eavesdrop", "100")["reason"] == "protected"
    assert view_cell(view, "row", "eavesdrop", "100")["allowed"]
    assert view["supervision"]["protected_extensions"] == ["101", "999"]
    summary = await api.get(POLICY_URL + "matrix/summary")
    support = summary["groups"].index("support")
    # support is 100 and 101: only 101 -> 100 is left (100 -> 101 is protected now).
    assert summary["allowed"]["eavesdrop"][support][support] == 1


async def test_a_cell_only_a_grant_allows_names_the_grant_and_its_until(api: Clocked) -> None:
    grant = await api.grant(note="coaching sales, ticket HR-123")
    coming = await api.grant(
        ext="103",
        extensions=["102"],
        **{"from": (api.now[0] + HOUR).isoformat(), "until": (api.now[0] + 2 * HOUR).isoformat()},
    )
    matrix = await api.get(POLICY_URL + "matrix")
    entry = cell(matrix, "eavesdrop", "100", "102")
    assert entry == {
        "allowed": True,
        "reason": "temporary_grant",
        "group": None,
        "grant_ids": [grant["id"]],
        "until": (api.now[0] + HOUR).isoformat(),
    }
    assert cell(matrix, "eavesdrop", "100", "101")["reason"] == "eavesdrop_group"  # the document
    assert cell(matrix, "whisper", "100", "102")["reason"] == "whisper_not_permitted"
    assert not cell(matrix, "eavesdrop", "103", "102")["allowed"]  # not yet
    shown = matrix["supervision"]
    assert [(g["id"], g["state"]) for g in shown["grants"]] == [
        (grant["id"], "active"),
        (coming["id"], "scheduled"),
    ]
    first = shown["grants"][0]
    assert (first["note"], first["created_by"], first["ext"], first["extensions"]) == (
        "coaching sales, ticket HR-123",
        "admin",
        "100",
        ["102"],
    )
    # The next instant a grant starts or ends: the end of the first and the start of the second.
    assert shown["valid_until"] == (api.now[0] + HOUR).isoformat()
    as_decided(api, matrix)

    view = await api.get(POLICY_URL + "matrix/extension/102")
    by_grant = view_cell(view, "column", "eavesdrop", "100")
    assert (by_grant["reason"], by_grant["grant_ids"]) == ("temporary_grant", [grant["id"]])


async def test_the_picture_changes_when_a_grant_is_added_and_when_it_ends(api: Clocked) -> None:
    urls = [POLICY_URL + "matrix", POLICY_URL + "matrix/extension/100"]
    first = await api.get(urls[0])
    assert not cell(first, "eavesdrop", "100", "102")["allowed"]
    await api.get(urls[1])  # both pictures are cached now

    grant = await api.grant(until=(api.now[0] + HOUR).isoformat())
    added = await api.get(urls[0])
    assert cell(added, "eavesdrop", "100", "102")["grant_ids"] == [grant["id"]]
    assert view_cell(await api.get(urls[1]), "row", "eavesdrop", "102")["allowed"]

    api.advance(HOUR - timedelta(seconds=1))  # still active: the same picture
    assert (await api.get(urls[0])) == added
    api.advance(timedelta(seconds=1))  # its until: no longer
    ended = await api.get(urls[0])
    assert cell(ended, "eavesdrop", "100", "102")["reason"] == "eavesdrop_not_permitted"
    assert ended["supervision"]["grants"] == []
    assert ended["supervision"]["valid_until"] is None
    assert not view_cell(await api.get(urls[1]), "row", "eavesdrop", "102")["allowed"]
    as_decided(api, ended)


async def test_a_grant_s_start_changes_the_summary(api: Clocked) -> None:
    start = api.now[0] + HOUR
    await api.grant(
        ext="103",
        action="whisper",
        groups=["support"],
        extensions=[],
        **{"from": start.isoformat(), "until": (start + HOUR).isoformat()},
    )
    summary = await api.get(POLICY_URL + "matrix/summary")
    hr, support = summary["groups"].index("hr"), summary["groups"].index("support")
    assert summary["allowed"]["whisper"][hr][support] == 1  # 101 -> 100 (the document)
    assert summary["supervision"]["valid_until"] == start.isoformat()
    api.advance(HOUR)
    started = await api.get(POLICY_URL + "matrix/summary")
    assert started["allowed"]["whisper"][hr][support] == 3  # and 103 -> 100, 101
    assert started["supervision"]["valid_until"] == (start + HOUR).isoformat()


async def test_the_preview_judges_both_sides_with_the_grants_groups_of_each(
    api: Clocked,
) -> None:
    grant = await api.grant(groups=["sales"], extensions=[])
    same = await api.send("POST", POLICY_URL + "preview", REFERENCE_DOCUMENT)
    assert same["changes"] == []
    assert same["supervision_version"] == 1
    # 102 leaves sales: the grant naming sales no longer reaches it.
    narrowed = {**REFERENCE_DOCUMENT, "groups": {**REFERENCE_DOCUMENT["groups"], "sales": ["101"]}}  # type: ignore[dict-item]
    preview = await api.send("POST", POLICY_URL + "preview", narrowed)
    changes = {(c["action"], c["ext"], c["target"]): c for c in preview["changes"]}
    lost = changes[("eavesdrop", "100", "102")]
    assert lost["before"] == {
        "allowed": True,
        "reason": "temporary_grant",
        "grant_ids": [grant["id"]],
    }
    assert lost["after"] == {"allowed": False, "reason": "eavesdrop_not_permitted"}


async def test_the_preview_of_a_change_leaves_a_protected_target_protected(api: Clocked) -> None:
    await api.send("PUT", SETTINGS_URL, {"protected_extensions": ["101"]})
    candidate = {**REFERENCE_DOCUMENT, "eavesdrop_103": ["support"]}
    preview = await api.send("POST", POLICY_URL + "preview", candidate)
    # support is 100 and 101; 101 is protected: 103 gets to listen to 100 only.
    assert preview["became_allowed"]["eavesdrop"] == 1
    assert [(c["ext"], c["target"]) for c in preview["changes"] if c["action"] == "eavesdrop"] == [
        ("103", "100")
    ]
    unprotected = {**REFERENCE_DOCUMENT, "allow_all": True}
    preview = await api.send("POST", POLICY_URL + "preview", unprotected)
    flips = {(c["action"], c["ext"], c["target"]) for c in preview["changes"]}
    assert ("eavesdrop", "100", "102") in flips
    listens = {flip for flip in flips if flip[0] in ("eavesdrop", "whisper")}
    assert not any(target == "101" for _, _, target in listens)  # protection wins over allow_all


# -- the live sessions of the preview: the whole daemon, the fake Manager, the real clock


async def _post(services: Services, url: str, body: object, method: str = "POST") -> Any:
    async with (
        aiohttp.ClientSession(base_url(services)) as http,
        http.request(method, url, json=body, headers=ADMIN) as response,
    ):
        assert response.status in (200, 201), await response.text()
        return await response.json()


async def _sessions(services: Services) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession(base_url(services)) as http,
        http.get(f"/client/{CLIENT}/live", headers=ADMIN) as response,
    ):
        sessions: list[dict[str, Any]] = (await response.json())["sessions"]
        return sessions


async def test_the_preview_keeps_a_session_a_grant_allows(daemon: Services, fake: FakeAmi) -> None:
    now = datetime.now(UTC)
    body = {
        "ext": "100",
        "action": "eavesdrop",
        "groups": ["sales"],
        "from": (now - HOUR).isoformat(),
        "until": (now + HOUR).isoformat(),
        "note": "coaching sales",
    }
    await _post(daemon, GRANTS_URL, body)
    await start_listen(daemon, fake, CLIENT, "100", "102", "1700000100.1")
    await wait_until(lambda: _has(daemon, "1700000100.1"))
    preview_url = f"/client/{CLIENT}/call_control_group/preview"
    unchanged = await _post(daemon, preview_url, {**REFERENCE_DOCUMENT, "pickup_all": False})
    assert unchanged["sessions_ended"] == []
    narrowed = {**REFERENCE_DOCUMENT, "groups": {**REFERENCE_DOCUMENT["groups"], "sales": ["101"]}}  # type: ignore[dict-item]
    (ended,) = (await _post(daemon, preview_url, narrowed))["sessions_ended"]
    assert (ended["listener"], ended["target"], ended["reason"]) == (
        "100",
        "102",
        "eavesdrop_not_permitted",
    )
    assert not fake.received("Hangup")  # a preview ends nothing


async def test_the_preview_names_a_session_on_a_protected_target_as_ending(
    daemon: Services, fake: FakeAmi
) -> None:
    await start_listen(daemon, fake, CLIENT, "100", "101", "1700000100.2")
    await wait_until(lambda: _has(daemon, "1700000100.2"))
    fake.silent = True  # the Hangup gets no answer: the session stays, ending
    await _post(daemon, SETTINGS_URL, {"protected_extensions": ["101"]}, method="PUT")
    await fake.wait_for(lambda action: action.name.lower() == "hangup")
    preview_url = f"/client/{CLIENT}/call_control_group/preview"
    (ended,) = (await _post(daemon, preview_url, REFERENCE_DOCUMENT))["sessions_ended"]
    assert (ended["listener"], ended["target"], ended["reason"]) == ("100", "101", "protected")
    assert ended["ending"]


async def _has(services: Services, uniqueid: str) -> bool:
    return any(s["uniqueid"] == uniqueid for s in await _sessions(services))
