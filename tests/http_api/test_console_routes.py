"""The console's routes: the permission picture, the impact preview, what is live, and End.

The picture is checked cell by cell against ``decide()`` for the reference policy; End against
the fake Manager (exactly one Hangup, of exactly that listener) and the audit log.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from callgate.daemon import Services
from callgate.policy import compile_policy, parse_document
from callgate.policy.matrix import ACTIONS, decide_cell
from console.daemon_support import (  # daemon: a fixture (fake: tests/conftest.py)
    ADMIN,
    base_url,
    client_token,
    daemon,
    start_listen,
)
from fake_ami import FakeAmi
from reference_policy import REFERENCE_DOCUMENT
from support import wait_until

from .http_support import ADMIN as HARNESS_ADMIN
from .http_support import CLIENT, POLICY_URL, Harness

__all__ = ["daemon"]  # a fixture, imported

JSON = {"Content-Type": "application/json"}


def cell(matrix: dict[str, Any], action: str, ext: str, target: str) -> dict[str, Any]:
    exts: list[str] = matrix["extensions"]
    width, alphabet = matrix["width"], matrix["alphabet"]
    digits = matrix["cells"][action][exts.index(ext)]
    at = exts.index(target) * width
    code = 0
    for char in digits[at : at + width]:
        code = code * 64 + alphabet.index(char)
    entry: dict[str, Any] = matrix["legend"][code]
    return entry


async def put_reference(api: Harness) -> None:
    response = await api.client.put(POLICY_URL, json=REFERENCE_DOCUMENT, headers=HARNESS_ADMIN)
    assert response.status == 200


async def test_the_reference_policys_matrix_is_decide_cell_by_cell(api: Harness) -> None:
    await put_reference(api)
    response = await api.client.get(POLICY_URL + "matrix", headers=HARNESS_ADMIN)
    assert response.status == 200
    matrix = await response.json()
    assert matrix["extensions"] == ["100", "101", "102", "103"]
    assert matrix["policy_version"] == 1
    assert cell(matrix, "eavesdrop", "100", "101") == {
        "allowed": True,
        "reason": "eavesdrop_group",
        "group": "support",
    }
    assert not cell(matrix, "eavesdrop", "100", "102")["allowed"]
    assert cell(matrix, "whisper", "101", "103")["allowed"]
    assert cell(matrix, "whisper", "101", "103")["group"] == "hr"
    # Only 101 holds a whisper grant, so nobody whispers to 101; and its grant names hr, so
    # (policy.md's rule 6) it may whisper to 100 too.
    assert not any(cell(matrix, "whisper", ext, "101")["allowed"] for ext in matrix["extensions"])
    assert [e for e in matrix["extensions"] if cell(matrix, "whisper", e, "100")["allowed"]] == [
        "101"
    ]
    assert cell(matrix, "pickup", "100", "100")["reason"] == "self_target"
    policy = compile_policy(parse_document(REFERENCE_DOCUMENT))
    for action in ACTIONS:
        for ext in matrix["extensions"]:
            for target in matrix["extensions"]:
                entry = cell(matrix, action, ext, target)
                expected = decide_cell(policy, action, ext, target)[:3]
                assert (entry["allowed"], entry["reason"], entry["group"]) == expected


async def test_the_matrix_answers_the_actions_asked_for_and_names_a_bad_one(api: Harness) -> None:
    await put_reference(api)
    response = await api.client.get(
        POLICY_URL + "matrix?actions=whisper,eavesdrop", headers=HARNESS_ADMIN
    )
    assert sorted((await response.json())["cells"]) == ["eavesdrop", "whisper"]
    response = await api.client.get(POLICY_URL + "matrix?actions=spy", headers=HARNESS_ADMIN)
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "invalid_query"
    assert body["details"][0]["loc"] == ["query", "actions"]


async def test_a_large_client_gets_the_summary_and_one_extensions_view(api: Harness) -> None:
    document = {
        "groups": {
            "floor1": [str(1000 + n) for n in range(200)],
            "floor2": [str(2000 + n) for n in range(200)],
        },
        "eavesdrop_1000": ["floor2"],
    }
    response = await api.client.put(POLICY_URL, json=document, headers=HARNESS_ADMIN)
    assert response.status == 200
    response = await api.client.get(POLICY_URL + "matrix", headers=HARNESS_ADMIN)
    assert response.status == 409
    body = await response.json()
    assert body["error"] == "matrix_too_large"
    assert body["details"] == [{"extensions": 400, "limit": 300}]

    response = await api.client.get(POLICY_URL + "matrix/summary", headers=HARNESS_ADMIN)
    summary = await response.json()
    assert summary["groups"] == ["floor1", "floor2"]
    assert summary["pairs"] == [[200 * 199, 200 * 200], [200 * 200, 200 * 199]]
    assert summary["allowed"]["eavesdrop"] == [[0, 200], [0, 0]]
    assert summary["allowed"]["pickup"] == summary["pairs"]  # pickup_all

    response = await api.client.get(POLICY_URL + "matrix/extension/2007", headers=HARNESS_ADMIN)
    view = await response.json()
    assert view["known"] is True
    assert len(view["others"]) == 399
    column = view["column"]["eavesdrop"]
    listeners = [
        o
        for i, o in enumerate(view["others"])
        if view["legend"][view["alphabet"].index(column[i])]["allowed"]
    ]
    assert listeners == ["1000"]
    response = await api.client.get(POLICY_URL + "matrix/extension/a%20b", headers=HARNESS_ADMIN)
    assert response.status == 422


async def test_preview_tells_what_changes_and_stores_nothing(api: Harness) -> None:
    await put_reference(api)
    candidate = {k: v for k, v in REFERENCE_DOCUMENT.items() if k != "eavesdrop_100"}
    candidate["whisper_103"] = ["support"]
    for body in (
        candidate,
        {"call_control_groups": candidate},
        {"call_control_groups": json.dumps(candidate)},
    ):
        response = await api.client.post(
            POLICY_URL + "preview", data=json.dumps(body), headers={**HARNESS_ADMIN, **JSON}
        )
        assert response.status == 200, await response.text()
        impact = await response.json()
        assert impact["base_version"] == 1
        assert impact["became_denied"]["eavesdrop"] == 1  # 100 -> 101
        assert impact["became_allowed"]["whisper"] == 2  # 103 -> 100, 101
        assert impact["became_allowed"]["eavesdrop"] == 2
        changes = {
            (c["action"], c["ext"], c["target"], c["after"]["allowed"]) for c in impact["changes"]
        }
        assert ("eavesdrop", "100", "101", False) in changes
        assert ("whisper", "103", "100", True) in changes
        assert impact["sessions_ended"] == []
        assert impact["replacements_ended"] == []
    response = await api.client.get(POLICY_URL, headers=HARNESS_ADMIN)
    assert response.headers["ETag"] == '"1"'


async def test_an_invalid_candidate_gets_put_s_located_errors(api: Harness) -> None:
    await put_reference(api)
    bad = {"groups": {"support": ["100", "not an ext"]}, "eavesdrop_100": ["nowhere"]}
    preview = await api.client.post(
        POLICY_URL + "preview", data=json.dumps(bad), headers={**HARNESS_ADMIN, **JSON}
    )
    put = await api.client.put(POLICY_URL, data=json.dumps(bad), headers={**HARNESS_ADMIN, **JSON})
    assert preview.status == put.status == 422
    assert (await preview.json())["details"] == (await put.json())["details"]
    locs = [d["loc"] for d in (await preview.json())["details"]]
    assert ["groups", "support", 1] in locs
    response = await api.client.post(
        POLICY_URL + "preview", data="{", headers={**HARNESS_ADMIN, **JSON}
    )
    assert response.status == 400
    response = await api.client.post(POLICY_URL + "preview", data="{}", headers=HARNESS_ADMIN)
    assert response.status == 415


async def test_without_a_manager_nothing_is_live_and_nothing_can_be_ended(api: Harness) -> None:
    response = await api.client.post(
        f"/client/{CLIENT}/live/default/1.2/end", headers=HARNESS_ADMIN
    )
    assert response.status == 404
    assert (await response.json())["error"] == "no_such_session"
    response = await api.client.get(f"/client/{CLIENT}/live", headers=HARNESS_ADMIN)
    assert await response.json() == {
        "policy_version": 0,
        "ami": "not_configured",
        "sessions": [],
        "replacements": [],
    }


async def live_now(http: aiohttp.ClientSession, headers: dict[str, str]) -> dict[str, Any]:
    async with http.get(f"/client/{CLIENT}/live", headers=headers) as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def test_end_hangs_up_exactly_that_listener_and_audits_the_operator(
    daemon: Services, fake: FakeAmi
) -> None:
    token = await client_token(daemon, CLIENT, "night-shift")
    auth = {"Authorization": f"Bearer {token}"}
    first = await start_listen(daemon, fake, CLIENT, "100", "101", "1700000000.1")
    second = await start_listen(
        daemon, fake, CLIENT, "101", "103", "1700000000.2", action="whisper"
    )
    async with aiohttp.ClientSession(base_url(daemon)) as http:
        sessions: list[dict[str, Any]] = []

        async def both() -> bool:
            sessions[:] = (await live_now(http, auth))["sessions"]
            return len(sessions) == 2

        await wait_until(both)
        assert {(s["listener"], s["target"], s["action"], s["channel"]) for s in sessions} == {
            ("100", "101", "eavesdrop", first),
            ("101", "103", "whisper", second),
        }
        assert all(s["policy_version"] == 1 and s["pbx"] == "default" for s in sessions)

        async with http.post(f"/client/{CLIENT}/live/default/1700000000.1/end", headers=auth) as r:
            assert r.status == 204, await r.text()
        (hangup,) = fake.received("Hangup")
        assert hangup.get("Channel") == first
        left = (await live_now(http, auth))["sessions"]
        assert [s["uniqueid"] for s in left] == ["1700000000.2"]

        async with http.post(f"/client/{CLIENT}/live/default/1700000000.1/end", headers=auth) as r:
            assert r.status == 404
            assert (await r.json())["error"] == "no_such_session"
        # The admin on another client: that session is not one of its sessions.
        async with http.post("/client/other/live/default/1700000000.2/end", headers=ADMIN) as r:
            assert r.status == 404
        assert len(fake.received("Hangup")) == 1

        assert daemon.store is not None
        await daemon.store.audit.flush()
        async with http.get(f"/client/{CLIENT}/audit?action=eavesdrop", headers=auth) as r:
            (row,) = (await r.json())["events"]
        assert (row["end_reason"], row["ended_by"]) == ("operator", "night-shift")


async def test_preview_names_the_live_session_a_change_would_end(
    daemon: Services, fake: FakeAmi
) -> None:
    await start_listen(daemon, fake, CLIENT, "100", "101", "1700000000.3")
    candidate = {k: v for k, v in REFERENCE_DOCUMENT.items() if k != "eavesdrop_100"}
    async with aiohttp.ClientSession(base_url(daemon)) as http:
        await wait_until(lambda: _has_sessions(http))
        async with http.post(
            f"/client/{CLIENT}/call_control_group/preview", json=candidate, headers=ADMIN
        ) as r:
            impact = await r.json()
    (ended,) = impact["sessions_ended"]
    assert (ended["listener"], ended["target"], ended["reason"]) == (
        "100",
        "101",
        "eavesdrop_not_permitted",
    )
    assert not fake.received("Hangup")  # a preview ends nothing


async def _has_sessions(http: aiohttp.ClientSession) -> bool:
    return bool((await live_now(http, ADMIN))["sessions"])


async def read_snapshot(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next ``snapshot`` event of a stream (comments skipped)."""
    event, data = "", ""
    async with asyncio.timeout(5):
        while True:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif not line and event == "snapshot":
                body: dict[str, Any] = json.loads(data)
                return body


async def test_the_event_stream_sends_a_snapshot_on_each_change_within_a_bound(
    daemon: Services, fake: FakeAmi
) -> None:
    url = f"/client/{CLIENT}/live/events"
    async with (
        aiohttp.ClientSession(base_url(daemon)) as http,
        http.get(url, headers=ADMIN) as stream,
    ):
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert (await read_snapshot(stream))["sessions"] == []
        await start_listen(daemon, fake, CLIENT, "100", "101", "1700000000.4")
        (session,) = (await read_snapshot(stream))["sessions"]
        assert session["listener"] == "100"
        others = [await http.get(url, headers=ADMIN) for _ in range(3)]
        try:
            assert [o.status for o in others] == [200, 200, 200]
            async with http.get(url, headers=ADMIN) as refused:
                assert refused.status == 429
                assert (await refused.json())["error"] == "too_many_streams"
        finally:
            for other in others:
                other.close()


async def test_a_client_token_reaches_no_other_clients_console_routes(daemon: Services) -> None:
    token = await client_token(daemon, CLIENT, "acme-ops")
    auth = {"Authorization": f"Bearer {token}"}
    base = "/client/rival/"
    async with aiohttp.ClientSession(base_url(daemon)) as http:
        for method, path in (
            ("GET", "call_control_group/matrix"),
            ("GET", "call_control_group/matrix/summary"),
            ("GET", "call_control_group/matrix/extension/100"),
            ("POST", "call_control_group/preview"),
            ("GET", "live"),
            ("GET", "live/events"),
            ("POST", "live/default/1.1/end"),
        ):
            async with http.request(
                method, base + path, headers=auth, json=REFERENCE_DOCUMENT
            ) as response:
                assert response.status == 403, (method, path)
                assert (await response.json())["error"] == "forbidden"
        async with http.get(f"/client/{CLIENT}/call_control_group/matrix", headers=auth) as r:
            assert r.status == 200
