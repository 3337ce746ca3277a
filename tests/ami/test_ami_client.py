"""The Manager client against the fake Manager over loopback: login, routing by ActionID,
timeouts, the watchdog, reconnecting, refused credentials, split UTF-8."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from callgate.ami.client import (
    ActionTimeoutError,
    ManagerClient,
    ManagerConfig,
    ManagerState,
    ManagerUnavailableError,
)
from callgate.ami.protocol import Message
from fake_ami import FakeAmi, parse_block, render, transcript_blocks
from support import wait_until

from .conftest import fast_config

NAME = 'Ünïcode \\"Name\\" \\\\, with comma'


class Client:
    """A started ManagerClient and the events it handed out."""

    def __init__(self, config: ManagerConfig) -> None:
        self.events: list[Message] = []
        self.states: list[ManagerState] = []
        self.manager = ManagerClient(
            config, on_event=self.events.append, on_state=self.states.append
        )


@pytest.fixture
async def client(fake: FakeAmi) -> AsyncIterator[Client]:
    client = Client(fast_config(fake.port, ping_interval=30))
    client.manager.start()
    await wait_until(lambda: client.manager.state is ManagerState.CONNECTED)
    yield client
    await client.manager.stop()


async def test_login_carries_an_actionid_and_subscribes_to_call_events(
    fake: FakeAmi, client: Client
) -> None:
    (login,) = fake.received("Login")
    assert login.get("ActionID")
    assert login.get("Username") == "callgate"
    assert login.get("Events") == "call"
    assert client.states == [ManagerState.CONNECTED]


async def test_answers_are_routed_by_actionid_between_events(fake: FakeAmi, client: Client) -> None:
    fake.add_channel("PJSIP/acme_102-00000001", "1.1")
    fake.add_channel("PJSIP/acme_103-00000002", "1.2")
    ping = asyncio.ensure_future(client.manager.send_action("Ping"))
    listing = asyncio.ensure_future(
        client.manager.send_action("CoreShowChannels", list_complete="CoreShowChannelsComplete")
    )
    await fake.event([("Event", "Hangup"), ("Privilege", "call,all"), ("Uniqueid", "9.9")])
    (pong,) = await ping
    response, *rows = await listing
    assert pong.get("Ping") == "Pong"
    assert response.get("EventList") == "start"
    assert [r.get("Uniqueid") for r in rows] == ["1.1", "1.2"]
    await wait_until(lambda: bool(client.events))
    assert [e.event for e in client.events] == ["Hangup"]  # list items never reach on_event


async def test_an_unanswered_action_times_out_and_the_next_one_works(
    fake: FakeAmi, client: Client
) -> None:
    fake.silent = True
    with pytest.raises(ActionTimeoutError):
        await client.manager.send_action("Ping", within=0.1)
    fake.silent = False
    (pong,) = await client.manager.send_action("Ping")
    assert pong.is_success


async def test_a_caller_name_split_inside_a_character_across_two_reads_is_decoded_whole(
    fake: FakeAmi, client: Client
) -> None:
    blocks = map(parse_block, transcript_blocks("chanspy-listen-whisper-and-hangup.txt"))
    data = render(next(b for b in blocks if ("CallerIDName", NAME) in b))
    cut = data.index("Ü".encode()) + 1
    await fake.send(data, chunks=[cut])  # two writes, 50 ms apart: two reads on our side
    await wait_until(lambda: bool(client.events))
    assert client.events[0].get("CallerIDName") == NAME


async def test_a_silent_half_dead_connection_is_detected_and_replaced(fake: FakeAmi) -> None:
    client = Client(fast_config(fake.port, ping_interval=0.1, ping_timeout=0.2))
    client.manager.start()
    try:
        await wait_until(lambda: client.manager.state is ManagerState.CONNECTED)
        fake.silent = True  # TCP stays open, nothing comes back
        await fake.wait_for(lambda a: a.name == "Ping")
        await wait_until(lambda: ManagerState.DISCONNECTED in client.states)
        fake.silent = False
        await wait_until(lambda: len(fake.received("Login")) == 2)
        await wait_until(lambda: client.manager.state is ManagerState.CONNECTED)
        assert client.states == [
            ManagerState.CONNECTED,
            ManagerState.DISCONNECTED,
            ManagerState.CONNECTED,
        ]
    finally:
        await client.manager.stop()


async def test_a_dropped_connection_is_reconnected_and_actions_meanwhile_fail_at_once(
    fake: FakeAmi, client: Client
) -> None:
    await fake.drop()
    await wait_until(lambda: client.manager.state is ManagerState.DISCONNECTED)
    with pytest.raises(ManagerUnavailableError):
        client.manager.submit("Hangup", [("Channel", "PJSIP/acme_100-00000001")])
    await wait_until(lambda: client.manager.state is ManagerState.CONNECTED)
    assert len(fake.received("Login")) == 2
    assert not fake.received("Hangup"), "nothing queued while down is replayed later"


async def test_reconnect_backs_off_exponentially_while_the_manager_is_away() -> None:
    fake = FakeAmi()
    port = await fake.start()
    await fake.close()  # nobody listens on the port now
    client = Client(fast_config(port, backoff_initial=0.02, backoff_max=0.64))
    delays: list[float] = []
    real_backoff = client.manager._backoff
    client.manager._backoff = lambda failures: delays.append(real_backoff(failures)) or 0.001  # type: ignore[method-assign]
    client.manager.start()
    try:
        await wait_until(lambda: len(delays) >= 8)
    finally:
        await client.manager.stop()
    ceilings = [min(0.64, 0.02 * 2**n) for n in range(8)]
    assert all(0.01 <= d <= c for d, c in zip(delays, ceilings, strict=False))
    assert max(delays[5:]) > 0.04  # it grows: later waits exceed the first ceiling


async def test_refused_credentials_are_reported_and_not_retried_in_a_tight_loop(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client(fast_config(fake.port, secret="wrong-secret", auth_retry=30))
    caplog.set_level(logging.ERROR, logger="callgate.ami.client")
    client.manager.start()
    try:
        await wait_until(lambda: client.manager.state is ManagerState.AUTH_FAILED)
        await asyncio.sleep(0.5)  # what a tight loop would use to try again and again
        assert len(fake.received("Login")) == 1
        assert client.manager.state is ManagerState.AUTH_FAILED
    finally:
        await client.manager.stop()
    (record,) = caplog.records
    assert "refused the login of user 'callgate'" in record.getMessage()
    assert "Authentication failed" in record.getMessage()
    assert "wrong-secret" not in caplog.text
