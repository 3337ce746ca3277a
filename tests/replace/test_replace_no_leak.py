"""The PIN never leaves: not in a log line (every logger at DEBUG, aiohttp's access log
included), not in an HTTP response, not in an AGI command line, not in the store in clear."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from callgate.http.app import HttpDeps, build_app
from callgate.metrics import Metrics
from callgate.registry import PolicyRegistry
from callgate.store import open_store
from fake_asterisk import FakeChannel, call, request_environment
from reference_policy import REFERENCE_DOCUMENT
from support import sqlite_file
from wiring import app_services

from .conftest import CLIENT, FakeAstDb, FakeAudit, agi_server, make_service
from .conftest import client_policy as make_policy

JSON = {"Content-Type": "application/json"}  # every body must say it is JSON (415)

PIN = "80417263"
WRONG = "80417264"
ADMIN_TOKEN = "admin-token-no-leak"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_the_pin_appears_nowhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger and everything under it
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG)
    db_file = tmp_path / "callgate.sqlite3"
    store = await open_store(str(db_file))
    registry = PolicyRegistry()
    registry.load(make_policy(REFERENCE_DOCUMENT, 1))
    metrics, audit, manager = Metrics(), FakeAudit(), FakeAstDb()
    service = make_service(store.replace, registry, audit, lambda _pbx=None: manager)
    app = build_app(HttpDeps(app_services(store, registry, service), metrics, ADMIN_TOKEN))
    http: TestClient[object, object] = TestClient(TestServer(app, host="127.0.0.1"))
    agi = agi_server(service, registry, audit, metrics)
    await http.start_server()
    await agi.start()
    bodies: list[str] = []
    commands: list[bytes] = []
    try:
        url = f"/client/{CLIENT}/extension/101/replace_pin"
        for body in (
            {"pin": PIN},
            {"pin": int(PIN)},
            {"pin": PIN + "12345"},
            {"pin": PIN, "again": PIN},
            {PIN: PIN},
        ):
            resp = await http.put(url, data=json.dumps(body), headers={**ADMIN, **JSON})
            bodies.append(await resp.text())
        malformed = f'{{"pin": "{PIN}"'
        resp = await http.put(url, data=malformed, headers={**ADMIN, **JSON})
        bodies.append(await resp.text())
        assert resp.status == 400

        astdb: dict[tuple[str, str], str] = {}
        for digits in (WRONG, PIN):
            channel = FakeChannel(variables={"CALLGATE_EXT": "100"}, astdb=astdb, dtmf=[digits])
            await call(agi.port, request_environment("replace", CLIENT, "100", "101"), channel)
            commands += channel.commands
        assert channel.variables["CALLGATE_DECISION"] == "ALLOW"

        for path in (f"/client/{CLIENT}/replacements", "/openapi.json", "/metrics"):
            resp = await http.get(path, headers=ADMIN)
            bodies.append(await resp.text())
        resp = await http.delete(f"/client/{CLIENT}/replacements/100", headers=ADMIN)
        assert resp.status == 204
        resp = await http.delete(url, headers=ADMIN)
        assert resp.status == 204
    finally:
        await agi.stop()
        await http.close()
        await store.close()

    # the run really was logged at DEBUG, aiohttp's access log included
    assert any(r.name == "aiohttp.access" for r in caplog.records)
    assert any("decision client=acme action=replace" in r.getMessage() for r in caplog.records)
    texts = [caplog.text]
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), str(record.exc_text or "")]
    for secret in (PIN, WRONG):
        assert not [t for t in texts if secret in t], "a PIN reached the logs"
        assert not [b for b in bodies if secret in b], "a PIN reached an HTTP response"
        assert not [c for c in commands if secret.encode() in c], "a PIN in an AGI command"
        assert not [e for e in audit.events if secret in repr(e)], "a PIN in the audit"
    with sqlite_file(db_file) as conn:
        assert PIN not in "\n".join(conn.iterdump())
