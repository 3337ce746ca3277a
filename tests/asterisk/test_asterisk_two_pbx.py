"""Two real Asterisk servers, ``east`` and ``west``, on one callgate pair: a listen is revoked on
the server where it runs, and only there.

Topology (what a hosted PBX runs): two ``callgate serve`` instances on one PostgreSQL database,
both with the same TOML settings naming both servers (``[pbx.east]``, ``[pbx.west]``); each
Asterisk's dialplan names itself in ``CALLGATE_PBX`` and lists both instances in
``CALLGATE_AGI``. One instance per PBX holds that PBX's enforcement lock and is connected to its
Manager; the other is on standby for it. Each policy change is written through the instance that
is on standby for the PBX whose listen it ends: the enforcing instance learns of it over the
change feed, as an operator's change on any instance must be followed.

Why PostgreSQL and not one instance on SQLite: several servers served by several instances is
the topology the issue asks for, and the one where a revocation could go to the wrong server or
to none (the enforcing instance is not the one written to). The module skips with the install
hint when PostgreSQL is missing (and fails in CI, where ``CALLGATE_REQUIRE_POSTGRESQL=1``).

Runs when an Asterisk binary is found (``ASTERISK_BIN`` or ``asterisk`` on PATH)::

    ASTERISK_BIN=/usr/sbin/asterisk .venv/bin/pytest tests/asterisk -ra -k two_pbx
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pg_cluster import PgCluster
from support import free_port, wait_until

from .conftest import CLIENTS, hang_up_everything, new_asterisk
from .harness import (
    AMI_TESTER,
    Ami,
    Api,
    Asterisk,
    Callgate,
    admin_api,
    event,
    skip_without_asterisk,
)
from .test_asterisk_e2e import POLICY, channels, dial, ring
from .test_asterisk_failover import in_step

skip_without_asterisk()

pytestmark = pytest.mark.asterisk

NAMES = ("east", "west")

GLOBEX_POLICY: dict[str, Any] = {
    "pickup_all": False,
    "groups": {"team": ["200", "201"]},
    "eavesdrop_200": ["team"],
}
"""globex 200 may listen to 201."""


def without(document: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


def settings_file(path: Path, servers: dict[str, Asterisk]) -> Path:
    """The TOML both instances start with: one table per server, one Manager account on all
    (its secret in CALLGATE_AMI_SECRET, as the harness sets)."""
    tables = "".join(
        f'\n[pbx.{name}]\nami = "127.0.0.1:{asterisk.ports.ami}"\n'
        for name, asterisk in servers.items()
    )
    path.write_text('ami_user = "callgate"\n' + tables)
    return path


@dataclass
class Site:
    """Two Asterisk servers by name, and the two callgate instances each of them asks."""

    servers: dict[str, Asterisk]
    instances: tuple[Callgate, Callgate]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("two_pbx")
    agi_ports = (free_port(), free_port())
    listed = "&".join(f"agi://127.0.0.1:{port}" for port in agi_ports)
    servers = {
        name: new_asterisk(root / name, agi=lambda _: listed, pbx_name=name) for name in NAMES
    }
    config = settings_file(root / "callgate.toml", servers)
    database = pg_cluster.create_database()
    dsn = pg_cluster.dsn(database)
    # ami_port is unused with --config: the Manager addresses are the file's
    first, second = (
        Callgate(root / f"callgate{i}", port, free_port(), 0, db=dsn, config=config)
        for i, port in enumerate(agi_ports)
    )
    for instance in (first, second):
        instance.root.mkdir()
    started: list[Asterisk] = []
    try:
        for asterisk in servers.values():
            asterisk.start()
            started.append(asterisk)
        # The first takes both enforcement locks (ready: ami "up", every PBX connected); the
        # second finds them held and is on standby for both, its ami never "up".
        first.start()
        second.start(require_ami=False)
        yield Site(servers, (first, second))
    finally:
        second.stop()
        first.stop()
        for asterisk in started:
            asterisk.stop()
        pg_cluster.drop_database(database)


@dataclass
class Calls:
    """The tester's Manager connection to each server, and the admin API of each instance."""

    ami: dict[str, Ami]
    api: tuple[Api, Api]


@pytest.fixture
async def calls(site: Site) -> AsyncIterator[Calls]:
    """Both servers without calls or AstDB test keys, both clients back to default policies."""
    managers: dict[str, Ami] = {}
    async with admin_api(site.instances[0]) as first, admin_api(site.instances[1]) as second:
        try:
            for name, asterisk in site.servers.items():
                managers[name] = await Ami.connect(asterisk.ports.ami, *AMI_TESTER)
                await managers[name].wait_event(event("FullyBooted"), since=0, within=30)
                await hang_up_everything(managers[name])
                await managers[name].action_any("DBDelTree", Family="sim")
            for client in CLIENTS:
                await first.reset(client)
            yield Calls(managers, (first, second))
        finally:
            for manager in managers.values():
                await hang_up_everything(manager)
                await manager.close()


async def readiness(api: Api) -> tuple[int, dict[str, Any]]:
    async with api.http.get(f"{api.base}/readyz") as response:
        body = await response.json()
        assert isinstance(body, dict)
        return response.status, body


async def enforcers(calls: Calls) -> dict[str, int]:
    """For each PBX, the index of the one instance connected to its Manager (the other is on
    standby for it)."""
    states = [(await readiness(api))[1]["pbx"] for api in calls.api]
    found: dict[str, int] = {}
    for name in NAMES:
        column = [state[name] for state in states]
        assert sorted(column) == ["standby", "up"], (name, column)
        found[name] = column.index("up")
    return found


async def put_on_both(calls: Calls, through: int, client: str, document: dict[str, Any]) -> None:
    """``client``'s policy written through instance ``through``, in force on the other as well
    (the dialplan may ask either)."""
    writer, other = calls.api[through], calls.api[1 - through]
    await writer.put_policy(client, document)
    await in_step(writer, other, client)


async def listen(ami: Ami, phone: str, code: str) -> str:
    """``phone``'s handset dials ``code`` (``*51<ext>``); its spying channel."""
    mark = await dial(ami, phone, code)
    start = await ami.wait_event(event("ChanSpyStart", SpyerChannel=f"PJSIP/{phone}-*"), mark)
    return start["SpyerChannel"]


async def tracked(calls: Calls, client: str, expected: set[tuple[str, str]]) -> None:
    """Every PBX's enforcing instance lists exactly ``expected`` (PBX, listener's channel) of
    ``client``'s live sessions on that PBX (adopted from its Manager's events, a moment after
    ChanSpyStart)."""
    enforcing = await enforcers(calls)

    async def listed() -> bool:
        found: set[tuple[str, str]] = set()
        for name, index in enforcing.items():
            api = calls.api[index]
            async with api.http.get(f"{api.base}/client/{client}/live") as response:
                assert response.status == 200, await response.text()
                sessions = (await response.json())["sessions"]
            found |= {(s["pbx"], s["channel"]) for s in sessions if s["pbx"] == name}
        return found == expected

    await wait_until(listed, within=5, interval=0.05)


async def spying(ami: Ami, channel: str) -> bool:
    row = (await channels(ami)).get(channel)
    return row is not None and row["Application"] == "ChanSpy"


async def test_readyz_names_both_servers_each_enforced_by_one_instance(calls: Calls) -> None:
    for api in calls.api:
        status, body = await readiness(api)
        assert status == 200, body
        assert body["status"] == "ready"
        assert set(body["pbx"]) == set(NAMES), body
    await enforcers(calls)  # exactly one "up" and one "standby" per PBX
    for name, ami in calls.ami.items():  # and each server names itself as the settings do
        answer = await ami.action("Getvar", Variable="CALLGATE_PBX")
        assert answer["Value"] == name


async def test_a_listen_on_each_server_is_revoked_on_its_own_server(calls: Calls) -> None:
    east, west = calls.ami["east"], calls.ami["west"]
    # Each change is written through the instance NOT enforcing on that PBX.
    writer = {name: 1 - index for name, index in (await enforcers(calls)).items()}
    await put_on_both(calls, writer["east"], "acme", POLICY)
    await put_on_both(calls, writer["west"], "globex", GLOBEX_POLICY)

    east_spyee = await ring(east, "acme", "101", answer=True)
    east_spier = await listen(east, "acme_100", "*51101")
    west_spyee = await ring(west, "globex", "201", answer=True)
    west_spier = await listen(west, "globex_200", "*51201")
    await tracked(calls, "acme", {("east", east_spier)})
    await tracked(calls, "globex", {("west", west_spier)})

    east_mark, west_mark = east.mark(), west.mark()
    await put_on_both(calls, writer["east"], "acme", without(POLICY, "eavesdrop_100"))
    await east.wait_event(event("Hangup", Channel=east_spier), east_mark, within=5)
    await asyncio.sleep(0.5)  # a wrong Hangup would come within milliseconds, as the right one
    assert west.events_since(west_mark, event("Hangup", Channel=west_spier)) == []
    assert await spying(west, west_spier), "west's listen goes on"
    assert east_spyee in await channels(east), "the call listened to on east goes on"

    west_mark = west.mark()
    await put_on_both(calls, writer["west"], "globex", without(GLOBEX_POLICY, "eavesdrop_200"))
    await west.wait_event(event("Hangup", Channel=west_spier), west_mark, within=5)
    assert west_spyee in await channels(west), "the call listened to on west goes on"


async def test_one_client_on_both_servers_one_change_ends_the_listen_on_each(
    calls: Calls,
) -> None:
    """The same client, phones and (likely) channel names on both servers: sessions are told
    apart by their server, and one change ends each on the server where it runs."""
    await put_on_both(calls, 0, "acme", POLICY)
    spiers: dict[str, str] = {}
    spyees: dict[str, str] = {}
    for name, ami in calls.ami.items():
        spyees[name] = await ring(ami, "acme", "101", answer=True)
        spiers[name] = await listen(ami, "acme_100", "*51101")

    await tracked(calls, "acme", set(spiers.items()))

    marks = {name: ami.mark() for name, ami in calls.ami.items()}
    await put_on_both(calls, 1, "acme", without(POLICY, "eavesdrop_100"))
    for name, ami in calls.ami.items():
        await ami.wait_event(event("Hangup", Channel=spiers[name]), marks[name], within=5)
        assert spyees[name] in await channels(ami), name
