"""FastAGI failover in the shipped dialplan, against a real Asterisk and two real callgate
instances on one PostgreSQL database.

The PBX's CALLGATE_AGI lists both instances (``agi://<first>&agi://<second>``). The dialplan asks
the second only when the first gave no answer: stopped, not reachable, or closing without a
verdict. After an answer, ALLOW or DENY, whatever AGISTATUS says, the second is never asked: its
``callgate_agi_sessions_total`` does not move.

Why PostgreSQL and not two SQLite copies: it is the topology callgate supports for several
instances (one SQLite file is one writer), the policy is written once, through the first
instance, and the second decides by it because it came over the change feed: what is tested is
what an operator runs. The module skips with the install hint when PostgreSQL is missing (and
fails in CI, where ``CALLGATE_REQUIRE_POSTGRESQL=1``).

Runs when an Asterisk binary is found (``ASTERISK_BIN`` or ``asterisk`` on PATH)::

    ASTERISK_BIN=/usr/sbin/asterisk .venv/bin/pytest tests/asterisk -ra -k failover
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from pg_cluster import PgCluster
from support import free_port, wait_until

from .conftest import hang_up_everything, new_asterisk
from .harness import (
    Ami,
    Api,
    Asterisk,
    Callgate,
    Pbx,
    admin_api,
    event,
    skip_without_asterisk,
)
from .test_asterisk_e2e import POLICY, answer_of, astdb, channels, dial, ended, ring, varset

skip_without_asterisk()

pytestmark = pytest.mark.asterisk


@dataclass
class Pair:
    """One Asterisk whose dialplan lists two callgate instances sharing one database."""

    asterisk: Asterisk
    first: Callgate
    second: Callgate

    @property
    def listed(self) -> str:
        """CALLGATE_AGI as the PBX was configured: the first instance, then the second."""
        assert self.asterisk.agi is not None
        return self.asterisk.agi


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("failover")
    second_agi = free_port()
    asterisk = new_asterisk(
        root / "asterisk",
        agi=lambda ports: f"agi://127.0.0.1:{ports.agi}&agi://127.0.0.1:{second_agi}",
    )
    database = pg_cluster.create_database()
    dsn = pg_cluster.dsn(database)
    ami_port = asterisk.ports.ami
    first = Callgate(root / "first", asterisk.ports.agi, free_port(), ami_port, db=dsn)
    second = Callgate(root / "second", second_agi, free_port(), ami_port, db=dsn)
    for instance in (first, second):
        instance.root.mkdir()
    asterisk.start()
    try:
        first.start()  # migrates the empty database, takes the PBX's enforcement lock
        second.start(require_ami=False)  # finds both done: on standby, its ami never "up"
        yield Pair(asterisk, first, second)
    finally:
        second.stop()
        first.stop()
        asterisk.stop()
        pg_cluster.drop_database(database)


@pytest.fixture(scope="module")
def pbx(pair: Pair) -> Pbx:
    """The conftest fixtures (``api``, ``ami``) talk to the first instance."""
    return Pbx(pair.asterisk, pair.first)


@pytest.fixture
async def second_api(pair: Pair) -> AsyncIterator[Api]:
    async with admin_api(pair.second) as api:
        yield api


@pytest.fixture
async def calls(ami: Ami, pair: Pair) -> AsyncIterator[Ami]:
    """The tester's Manager connection, with the second instance running and CALLGATE_AGI put
    back to the configured list afterwards (tests change it with ``agi_list``)."""
    if pair.second.process is None:
        await asyncio.to_thread(pair.second.start, require_ami=False)
    try:
        yield ami
    finally:
        await agi_list(ami, pair.listed)


async def agi_list(ami: Ami, value: str) -> None:
    """Set the PBX's global CALLGATE_AGI (what the next feature code walks)."""
    await ami.action("Setvar", Variable="CALLGATE_AGI", Value=value)


async def sessions(instance: Callgate) -> float:
    return await asyncio.to_thread(instance.agi_sessions)


def counted(instance: Callgate, expected: float) -> Callable[[], Awaitable[bool]]:
    """A condition for ``wait_until``: the instance has counted ``expected`` sessions (a session
    is counted once callgate has closed it, a moment after Asterisk saw the end)."""

    async def check() -> bool:
        return await sessions(instance) == expected

    return check


async def in_step(first: Api, second: Api, client: str) -> None:
    """The second instance decides by the version the first one just acknowledged."""
    version = await first.policy_version(client)

    async def caught_up() -> bool:
        return await second.policy_version(client) == version

    await wait_until(caught_up, within=10, interval=0.02)


async def picks_up(ami: Ami, target: str) -> int:
    """acme_100 dials ``**101``: allowed, and it takes ``target``; the mark of the dial."""
    mark = await dial(ami, "acme_100", "**101")
    assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "pickup_share_group")
    picked = await ami.wait_event(event("Pickup", Channel="PJSIP/acme_100-*"), mark)
    assert picked["TargetChannel"] == target
    return mark


async def policy_on_both(first: Api, second: Api) -> None:
    """acme's test policy, written through the first instance, in force on both."""
    await first.put_policy("acme", POLICY)
    await in_step(first, second, "acme")


def statuses(ami: Ami, phone: str, since: int) -> list[str]:
    """Every AGISTATUS the dialing phone's channel got, in order: one per callgate tried."""
    return [e["Value"] for e in ami.events_since(since, varset(phone, "AGISTATUS", None))]


@contextlib.asynccontextmanager
async def fastagi_stub(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A FastAGI server on loopback that behaves as ``handle`` says; its port."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def read_environment(reader: asyncio.StreamReader) -> None:
    for _ in range(200):  # Asterisk sends a few dozen agi_* lines, then an empty one
        if (await asyncio.wait_for(reader.readline(), 5)).strip() == b"":
            return


# ------------------------------------------------------------------------------ the first stopped


async def test_first_stopped_the_second_answers_every_feature_code(
    calls: Ami, api: Api, second_api: Api, pair: Pair
) -> None:
    ami = calls
    await api.set_pin("acme", "101", "2468")
    await policy_on_both(api, second_api)
    before = await sessions(pair.second)
    await asyncio.to_thread(pair.first.stop)
    try:
        mark = await picks_up(ami, await ring(ami, "acme", "101"))
        # the first refused the connection, the second answered
        assert statuses(ami, "acme_100", mark) == ["FAILURE", "SUCCESS"]
        await hang_up_everything(ami)

        for code, ext, options in (("*51101", "101", "qESu"), ("*52102", "102", "qESuw")):
            spyee = await ring(ami, "acme", ext, answer=True)
            mark = await dial(ami, "acme_100", code)
            start = await ami.wait_event(
                event("ChanSpyStart", SpyerChannel="PJSIP/acme_100-*"), mark
            )
            assert start["SpyeeChannel"] == spyee, code
            spier = (await channels(ami))[start["SpyerChannel"]]
            assert spier["ApplicationData"] == f"{spyee},{options}"
            assert statuses(ami, "acme_100", mark) == ["FAILURE", "SUCCESS"], code
            await hang_up_everything(ami)

        mark = await dial(ami, "acme_100", "*41101", digits="2468#")
        assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "phone_replace_group")
        assert await astdb(ami, "callgate/acme/acting", "100") == "101"
        await ended(ami, "acme_100", mark)

        mark = await dial(ami, "acme_100", "*40")
        assert await answer_of(ami, "acme_100", mark) == ("ALLOW", "restored")
        assert await astdb(ami, "callgate/acme/acting", "100") is None
        await ended(ami, "acme_100", mark)

        # pickup, listen, whisper, replace, restore: all five on the second
        await wait_until(counted(pair.second, before + 5), within=5, interval=0.05)
    finally:
        # the second took the enforcement lock meanwhile: the first comes back on standby
        await asyncio.to_thread(pair.first.start, require_ami=False)


# ------------------------------------------------------------------------------ an answer is final


@pytest.mark.parametrize(
    ("code", "answer"),
    [
        ("**102", ("DENY", "pickup_not_permitted")),
        ("**101", ("ALLOW", "pickup_share_group")),
    ],
    ids=["deny", "allow"],
)
async def test_the_first_answers_the_second_is_never_asked(
    calls: Ami, api: Api, second_api: Api, pair: Pair, code: str, answer: tuple[str, str]
) -> None:
    ami = calls
    await policy_on_both(api, second_api)
    await ring(ami, "acme", code[2:])
    first, second = await sessions(pair.first), await sessions(pair.second)

    mark = await dial(ami, "acme_100", code)
    assert await answer_of(ami, "acme_100", mark) == answer
    if answer[0] == "ALLOW":
        await ami.wait_event(event("Pickup", Channel="PJSIP/acme_100-*"), mark)
    else:
        await ended(ami, "acme_100", mark)

    assert statuses(ami, "acme_100", mark) == ["SUCCESS"]
    await wait_until(counted(pair.first, first + 1), within=5, interval=0.05)
    assert await sessions(pair.second) == second


@pytest.mark.parametrize("decision", ["DENY", "ALLOW"])
async def test_an_answer_then_a_failure_is_not_asked_again_and_denied(
    calls: Ami, pair: Pair, decision: str
) -> None:
    """A FastAGI server that sets CALLGATE_DECISION and then fails the session: AGISTATUS is
    FAILURE, but it answered. No second question, and only SUCCESS & ALLOW lets a call through."""
    ami = calls

    async def answer_then_fail(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_environment(reader)
        writer.write(f"SET VARIABLE CALLGATE_DECISION {decision}\n".encode())
        await writer.drain()
        await asyncio.wait_for(reader.readline(), 5)  # 200 result=1
        writer.write(b"failure\n")  # res_agi.c: the script could not run, AGISTATUS=FAILURE
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(), 5)  # until Asterisk closes

    target = await ring(ami, "acme", "101")
    second = await sessions(pair.second)
    async with fastagi_stub(answer_then_fail) as port:
        await agi_list(ami, f"agi://127.0.0.1:{port}&agi://127.0.0.1:{pair.second.agi_port}")
        mark = await dial(ami, "acme_100", "**101")
        await ended(ami, "acme_100", mark)

    assert statuses(ami, "acme_100", mark) == ["FAILURE"]
    assert ami.events_since(mark, varset("acme_100", "CALLGATE_DECISION", decision))
    assert ami.events_since(mark, event("Pickup")) == []
    assert (await channels(ami))[target]["ChannelState"] == "5"
    assert await sessions(pair.second) == second


# ------------------------------------------------------------------------------ no answer: the next


async def test_first_not_reachable_the_second_answers(
    calls: Ami, api: Api, second_api: Api, pair: Pair
) -> None:
    ami = calls
    await policy_on_both(api, second_api)
    closed = free_port()  # nothing listens there: the connection is refused
    # the shorthand HOST:PORT of earlier releases, then a URL: both forms in one list
    await agi_list(ami, f"127.0.0.1:{closed}&agi://127.0.0.1:{pair.second.agi_port}")
    second = await sessions(pair.second)

    mark = await picks_up(ami, await ring(ami, "acme", "101"))
    assert statuses(ami, "acme_100", mark) == ["FAILURE", "SUCCESS"]
    assert await sessions(pair.second) == second + 1


async def test_first_closes_without_an_answer_the_second_answers(
    calls: Ami, api: Api, second_api: Api, pair: Pair
) -> None:
    """Accepting and closing (an instance dying mid-session): AGISTATUS=SUCCESS, no verdict."""
    ami = calls
    await policy_on_both(api, second_api)

    async def close_at_once(_: asyncio.StreamReader, __: asyncio.StreamWriter) -> None:
        return

    second = await sessions(pair.second)
    target = await ring(ami, "acme", "101")
    async with fastagi_stub(close_at_once) as port:
        await agi_list(ami, f"agi://127.0.0.1:{port}&agi://127.0.0.1:{pair.second.agi_port}")
        mark = await picks_up(ami, target)

    assert statuses(ami, "acme_100", mark) == ["SUCCESS", "SUCCESS"]
    assert await sessions(pair.second) == second + 1


async def test_no_instance_answers_the_call_is_denied(calls: Ami, api: Api) -> None:
    ami = calls
    await api.put_policy("acme", POLICY)
    await agi_list(ami, f"agi://127.0.0.1:{free_port()}&agi://127.0.0.1:{free_port()}")
    target = await ring(ami, "acme", "101")

    mark = await dial(ami, "acme_100", "**101")
    await ended(ami, "acme_100", mark)

    assert statuses(ami, "acme_100", mark) == ["FAILURE", "FAILURE"]
    assert ami.events_since(mark, event("Pickup")) == []
    assert ami.events_since(mark, varset("acme_100", "CALLGATE_DECISION")) == []
    assert (await channels(ami))[target]["ChannelState"] == "5"
